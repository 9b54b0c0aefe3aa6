# What `cmake --install` puts under a prefix, and the Debian packages CPack makes of it
# (docs/operations.md, "Installing"). Components:
#   runtime  bin/baton and the shared client library
#   system   /etc/baton/cluster.toml (an example topology) and the systemd unit: absolute
#            paths, so in the .deb only (EXCLUDE_FROM_ALL keeps them out of a prefix install)
#   dev      the client's public headers, its static libraries, the CMake package
#            (find_package(Baton), Baton::client, Baton::client_static) and baton-client.pc
include(CMakePackageConfigHelpers)

set(BATON_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/Baton)

install(TARGETS baton RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)
set_target_properties(baton_client_shared PROPERTIES EXPORT_NAME client)
set_target_properties(baton_client PROPERTIES EXPORT_NAME client_static)
set_target_properties(baton_schemas PROPERTIES EXPORT_NAME schemas)
set_target_properties(baton_base PROPERTIES EXPORT_NAME base)
install(TARGETS baton_client_shared EXPORT BatonTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT dev)
install(TARGETS baton_client baton_schemas baton_base EXPORT BatonTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)

# Only what a client needs: the client and plain structs; no Cap'n Proto, no CAF. They keep
# their paths under include/baton (#include <client/router_client.hpp>).
install(FILES client/router_client.hpp ${PROJECT_BINARY_DIR}/generated/client/version.hpp
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/baton/client COMPONENT dev)
install(FILES schemas/client.hpp schemas/client_codec.hpp schemas/inference.hpp schemas/types.hpp
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/baton/schemas COMPONENT dev)
install(FILES base/error.hpp DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/baton/base COMPONENT dev)

install(EXPORT BatonTargets NAMESPACE Baton:: DESTINATION ${BATON_CMAKE_DIR} COMPONENT dev)
configure_package_config_file(cmake/BatonConfig.cmake.in ${PROJECT_BINARY_DIR}/BatonConfig.cmake
  INSTALL_DESTINATION ${BATON_CMAKE_DIR})
# 0.x: a minor version may change the API.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/BatonConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/BatonConfig.cmake ${PROJECT_BINARY_DIR}/BatonConfigVersion.cmake
  DESTINATION ${BATON_CMAKE_DIR} COMPONENT dev)

# pkg-config, relocatable: the prefix is found from the .pc file's own place.
file(RELATIVE_PATH BATON_PC_TO_PREFIX "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
configure_file(cmake/baton-client.pc.in ${PROJECT_BINARY_DIR}/baton-client.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/baton-client.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)

install(FILES cluster.toml DESTINATION /etc/baton COMPONENT system EXCLUDE_FROM_ALL)
install(FILES docs/systemd/baton-node@.service
  DESTINATION /lib/systemd/system COMPONENT system EXCLUDE_FROM_ALL)

# The .deb packages: `cpack --config build/release/CPackConfig.cmake` (tests/package).
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME baton)
set(CPACK_PACKAGE_VENDOR "The Baton authors")
set(CPACK_PACKAGE_CONTACT "Baton maintainers <baton@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "disaggregated LLM inference runtime")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_GROUPING ONE_PER_GROUP)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION misc)
# The runtime libraries' packages (libcaf, libfabric, libcapnp, ...), from what the
# binaries link (dpkg-shlibdeps).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_BATON_PACKAGE_NAME baton)
set(CPACK_DEBIAN_BATON_PACKAGE_CONTROL_EXTRA
  ${PROJECT_SOURCE_DIR}/cmake/deb/conffiles)
set(CPACK_DEBIAN_BATON-DEV_PACKAGE_NAME baton-dev)
set(CPACK_DEBIAN_BATON-DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_BATON-DEV_PACKAGE_DEPENDS
  "baton (= ${PROJECT_VERSION}), libexpected-dev, libcapnp-dev, libfmt-dev, libssl-dev")
set(CPACK_COMPONENTS_ALL runtime system dev)
include(CPack)
cpack_add_component_group(baton DESCRIPTION "the baton command, the client library, a systemd unit")
cpack_add_component_group(baton-dev DESCRIPTION "headers, static libraries and CMake package of the router client")
cpack_add_component(runtime GROUP baton)
cpack_add_component(system GROUP baton)
cpack_add_component(dev GROUP baton-dev)
