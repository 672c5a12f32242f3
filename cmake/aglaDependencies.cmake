# How agla's targets take the dependencies whose locations are machine-specific (libtorch, stb's
# headers). Shared by the build tree (CMakeLists.txt) and the installed package (aglaConfig.cmake),
# which attaches them after finding the dependencies on the consumer's machine, so no path of the
# machine that built the package is baked into the exported targets.

# Adds `items` to `property` of `target`: as they are for an imported target (the installed
# package), inside $<BUILD_INTERFACE:...> for one of the build tree (kept out of the export).
function(agla_append_usage target property)
  get_target_property(imported ${target} IMPORTED)
  foreach(item IN LISTS ARGN)
    if(NOT imported)
      set(item "$<BUILD_INTERFACE:${item}>")
    endif()
    set_property(TARGET ${target} APPEND PROPERTY ${property} "${item}")
  endforeach()
endfunction()

# libtorch (after find_package(Torch)): TORCH_LIBRARIES holds its imported targets, which carry the
# ABI define; TORCH_INCLUDE_DIRS adds the C++ API headers. Included as system headers.
function(agla_attach_torch target)
  agla_append_usage(${target} INTERFACE_LINK_LIBRARIES ${TORCH_LIBRARIES})
  agla_append_usage(${target} INTERFACE_INCLUDE_DIRECTORIES ${TORCH_INCLUDE_DIRS})
  agla_append_usage(${target} INTERFACE_SYSTEM_INCLUDE_DIRECTORIES ${TORCH_INCLUDE_DIRS})
endfunction()

# stb's headers (after AGLA_STB_INCLUDE_DIR is found): agla/io/image.hpp includes its declarations.
function(agla_attach_stb_headers target)
  agla_append_usage(${target} INTERFACE_INCLUDE_DIRECTORIES ${AGLA_STB_INCLUDE_DIR})
  agla_append_usage(${target} INTERFACE_SYSTEM_INCLUDE_DIRECTORIES ${AGLA_STB_INCLUDE_DIR})
endfunction()
