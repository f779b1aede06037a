# cmake --install: headers, library and a CMake package, so that a code does
#   find_package(kfa)  +  target_link_libraries(app kfa::kfa)
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS kfa EXPORT kfaTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/kfa DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT kfaTargets NAMESPACE kfa:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kfa)
configure_package_config_file(cmake/kfaConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/kfaConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kfa)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/kfaConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/kfaConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/kfaConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kfa)
