include(CMakePackageConfigHelpers)

# A header-only package is the same on every architecture, so its CMake files go
# under share/ and its version file is ARCH_INDEPENDENT: a 32-bit consumer must
# not be refused by a package built on a 64-bit machine.
set(ROLLOUT_CMAKE_DIR "${CMAKE_INSTALL_DATADIR}/cmake/rollout")

set(_rollout_targets rollout rollout_process)
foreach(_optional rollout_tls rollout_prometheus)
  if(TARGET ${_optional})
    list(APPEND _rollout_targets ${_optional})
  endif()
endforeach()
install(TARGETS ${_rollout_targets} EXPORT rolloutTargets)
install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
install(EXPORT rolloutTargets NAMESPACE rollout:: DESTINATION "${ROLLOUT_CMAKE_DIR}")

configure_package_config_file(
  "${PROJECT_SOURCE_DIR}/cmake/rolloutConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/rolloutConfig.cmake"
  INSTALL_DESTINATION "${ROLLOUT_CMAKE_DIR}")
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/rolloutConfigVersion.cmake"
  VERSION "${PROJECT_VERSION}"
  COMPATIBILITY SameMajorVersion
  ARCH_INDEPENDENT)
install(FILES
  "${PROJECT_BINARY_DIR}/rolloutConfig.cmake"
  "${PROJECT_BINARY_DIR}/rolloutConfigVersion.cmake"
  DESTINATION "${ROLLOUT_CMAKE_DIR}")
