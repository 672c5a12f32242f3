# Finds agla's dependencies and attaches them to a target. Shared by the build tree and by the
# installed package (aglaConfig.cmake), so both resolve the same libraries the same way.
include(CMakeFindDependencyMacro)

find_dependency(Torch)
find_dependency(Eigen3 3.3 NO_MODULE)
find_dependency(nlohmann_json 3.7)
# libjpeg(-turbo), the JPEG decoder Pillow uses (Debian: libjpeg62-turbo-dev); CMake's FindJPEG.
find_dependency(JPEG)

# stb ships no CMake package on Debian: locate the headers directly (its implementation is agla::stb).
find_path(AGLA_STB_INCLUDE_DIR NAMES stb_image.h PATH_SUFFIXES stb REQUIRED)

function(agla_link_dependencies target)
  # TORCH_LIBRARIES carries the imported torch targets; TORCH_CXX_FLAGS the ABI define.
  target_link_libraries(${target} INTERFACE ${TORCH_LIBRARIES} Eigen3::Eigen nlohmann_json::nlohmann_json JPEG::JPEG)
  target_include_directories(${target} SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS}
                             $<BUILD_INTERFACE:${AGLA_STB_INCLUDE_DIR}>)
endfunction()
