# Builds TARGET in BUILD_DIR and passes only if the build FAILS and the compiler's
# output names CONCEPT: a policy that misses a member must be rejected with the
# concept's name in the message.
execute_process(
  COMMAND "${CMAKE_COMMAND}" --build "${BUILD_DIR}" --target "${TARGET}"
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE out
  ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "${TARGET} compiled, but it must be rejected")
endif()
# g++: "required for the satisfaction of 'LoadBalancer<LB>'";
# clang: "because 'X' does not satisfy 'LoadBalancer'".
string(REGEX MATCH "satisf[^\n]*[^A-Za-z_]${CONCEPT}[^A-Za-z_]" named "${out}${err}")
if(NOT named)
  message(FATAL_ERROR "${TARGET} failed to compile, but the diagnostic does not name ${CONCEPT}:\n${out}${err}")
endif()
message(STATUS "${TARGET} was rejected, and the diagnostic names ${CONCEPT}")
