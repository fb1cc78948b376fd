# Consumes rollout as a user would, from a CTest test:
#   MODE=find_package:     install the build tree into a scratch prefix, then
#                          configure, build and run tests/package/consumer with
#                          find_package(rollout CONFIG REQUIRED).
#   MODE=add_subdirectory: configure, build and run the consumer with
#                          add_subdirectory(<rollout source>).
foreach(var MODE SOURCE_DIR BUILD_DIR SCRATCH CXX_COMPILER GENERATOR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "consume.cmake needs -D${var}=...")
  endif()
endforeach()

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message(STATUS "${out}")
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "command failed (${rc}): ${cmd}\n${out}\n${err}")
  endif()
endfunction()

file(REMOVE_RECURSE "${SCRATCH}")
set(consumer_args -S "${SOURCE_DIR}/tests/package/consumer" -B "${SCRATCH}/build" -G "${GENERATOR}"
    "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS=${CXX_FLAGS}")
if(MODE STREQUAL "find_package")
  run("${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${SCRATCH}/prefix")
  if(NOT EXISTS "${SCRATCH}/prefix/share/cmake/rollout/rolloutConfigVersion.cmake")
    message(FATAL_ERROR "the install did not produce rolloutConfigVersion.cmake")
  endif()
  run("${CMAKE_COMMAND}" ${consumer_args} -DROLLOUT_CONSUME=find_package "-DCMAKE_PREFIX_PATH=${SCRATCH}/prefix"
      -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
else()
  run("${CMAKE_COMMAND}" ${consumer_args} -DROLLOUT_CONSUME=add_subdirectory "-DROLLOUT_SOURCE_DIR=${SOURCE_DIR}")
endif()
run("${CMAKE_COMMAND}" --build "${SCRATCH}/build")
run("${SCRATCH}/build/consumer")
