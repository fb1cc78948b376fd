# Private build options for rollout's own tests, examples and benchmarks.
# Nothing here reaches the installed interface: users keep their own flags.
add_library(rollout_options INTERFACE)
target_link_libraries(rollout_options INTERFACE rollout::rollout rollout::process)
foreach(_optional rollout::tls rollout::prometheus)
  if(TARGET ${_optional})
    target_link_libraries(rollout_options INTERFACE ${_optional})
  endif()
endforeach()
# ROLLOUT_CHECK_FORMAT_STRINGS: every format string in the headers is checked at
# compile time here (see rollout/detail/format.hpp); users' builds skip the check.
target_compile_definitions(rollout_options INTERFACE BOOST_ASIO_NO_DEPRECATED ROLLOUT_CHECK_FORMAT_STRINGS)
if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  target_compile_options(rollout_options INTERFACE -Wall -Wextra -Wpedantic -Wconversion -Wno-sign-conversion -Werror)
endif()
