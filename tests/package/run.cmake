# The package tests (tests/CMakeLists.txt), one step per call, selected by STEP:
#   install       installs the library component of the agla build tree into PREFIX
#   consumer      configures, builds and runs the consumer project SOURCE against PREFIX
#                 (find_package(agla CONFIG ...) only), with find_package(X) disabled for each X
#                 in DISABLE (comma-separated) (a dependency the consumer must not need)
#   subdirectory  configures, builds and runs the parent project SOURCE, which add_subdirectory()s
#                 AGLA_SOURCE_DIR with its own build type and Release flags, and checks they survived
# Builds go to WORK_DIR; COMPILER and LAUNCHER are the agla build's compiler and launcher (ccache).

cmake_policy(VERSION 3.18)

function(run_step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  message("${out}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc})")
  endif()
endfunction()

set(common_args -DCMAKE_CXX_COMPILER=${COMPILER})
if(LAUNCHER)
  list(APPEND common_args -DCMAKE_CXX_COMPILER_LAUNCHER=${LAUNCHER})
endif()

if(STEP STREQUAL "install")
  file(REMOVE_RECURSE ${PREFIX})
  run_step("cmake --install --component library" ${CMAKE_COMMAND} --install ${AGLA_BINARY_DIR} --prefix ${PREFIX}
           --component library)
  file(GLOB_RECURSE not_headers RELATIVE ${PREFIX}/include ${PREFIX}/include/*)
  list(FILTER not_headers EXCLUDE REGEX "\\.hpp$")
  if(not_headers)
    message(FATAL_ERROR "the package installs files other than headers into include/: ${not_headers}")
  endif()
elseif(STEP STREQUAL "consumer")
  file(REMOVE_RECURSE ${WORK_DIR})
  set(disabled)
  string(REPLACE "," ";" DISABLE "${DISABLE}")
  foreach(package IN LISTS DISABLE)
    list(APPEND disabled -DCMAKE_DISABLE_FIND_PACKAGE_${package}=ON)
  endforeach()
  run_step("configuring the consumer with find_package(agla)"
           ${CMAKE_COMMAND} -S ${SOURCE} -B ${WORK_DIR} -DCMAKE_PREFIX_PATH=${PREFIX} -DCMAKE_BUILD_TYPE=Release
           ${common_args} ${disabled})
  run_step("building the consumer" ${CMAKE_COMMAND} --build ${WORK_DIR})
  run_step("running the consumer" ${WORK_DIR}/consumer ${WORK_DIR})
elseif(STEP STREQUAL "subdirectory")
  file(REMOVE_RECURSE ${WORK_DIR})
  set(parent_flags "-O1 -DPARENT_FLAG")
  run_step("configuring the parent project"
           ${CMAKE_COMMAND} -S ${SOURCE} -B ${WORK_DIR} -DAGLA_SOURCE_DIR=${AGLA_SOURCE_DIR}
           -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_FLAGS_RELEASE=${parent_flags}" ${common_args})
  file(STRINGS ${WORK_DIR}/CMakeCache.txt cached REGEX "^CMAKE_(CXX_FLAGS_RELEASE|BUILD_TYPE):")
  if(NOT "CMAKE_CXX_FLAGS_RELEASE:STRING=${parent_flags}" IN_LIST cached OR
     NOT "CMAKE_BUILD_TYPE:STRING=Release" IN_LIST cached)
    message(FATAL_ERROR "add_subdirectory(agla) changed the parent's settings: ${cached}")
  endif()
  run_step("building the parent project" ${CMAKE_COMMAND} --build ${WORK_DIR})
  # The parent's own program and agla's stb library were both compiled with the parent's flags.
  file(READ ${WORK_DIR}/compile_commands.json commands)
  foreach(source subdirectory/main.cpp src/stb_image.cpp)
    string(REGEX MATCH "\"command\": \"[^\"]*${source}\"" command "${commands}")
    if(NOT command MATCHES " -O1 -DPARENT_FLAG " OR command MATCHES " -O2 | -DNDEBUG ")
      message(FATAL_ERROR "${source} was not compiled with the parent's flags: ${command}")
    endif()
  endforeach()
  run_step("running the parent's program" ${WORK_DIR}/parent ${WORK_DIR})
else()
  message(FATAL_ERROR "run.cmake: unknown STEP '${STEP}'")
endif()
