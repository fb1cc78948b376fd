# Compiles every public header alone, twice in one TU (include guard check), so
# a header that forgets one of its own includes fails the build.
file(GLOB_RECURSE _rollout_headers RELATIVE "${PROJECT_SOURCE_DIR}/include"
  CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/include/rollout/*.hpp")
set(_rollout_header_tus)
foreach(_header IN LISTS _rollout_headers)
  string(MAKE_C_IDENTIFIER "${_header}" _id)
  set(_tu "${PROJECT_BINARY_DIR}/header_check/${_id}.cpp")
  file(CONFIGURE OUTPUT "${_tu}" CONTENT "#include <${_header}>\n#include <${_header}>\n")
  list(APPEND _rollout_header_tus "${_tu}")
endforeach()
add_library(rollout_header_check OBJECT ${_rollout_header_tus})
target_link_libraries(rollout_header_check PRIVATE rollout_options)
# And every member of the class templates whose members format text, so that the
# format strings of members no test calls are checked too (see the file).
target_sources(rollout_header_check PRIVATE "${PROJECT_SOURCE_DIR}/tests/format_strings_check.cpp")
