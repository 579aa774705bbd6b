# Install rules and packaging, included at the end of the top-level
# CMakeLists.txt once every target exists.
#
#   cmake --install build/release --prefix /opt/shmlane     (or `make install`)
#
# installs:
#   bin/shmlaned, bin/shmlanectl
#   include/shmlane/clients/*.h, include/shmlane/dataplane/**.h   (-I<prefix>/include/shmlane)
#   lib*/libshmlane_{client_c,client,dataplane,protos}.a
#   lib*/cmake/shmlane/   find_package(shmlane CONFIG) -> shmlane::client, shmlane::client_c
#   lib*/pkgconfig/shmlane.pc, shmlane-c.pc
#   lib/systemd/system/shmlaned.service (ExecStart pointed at <prefix>/bin)
#   share/doc/shmlane/ (README, docs, examples/shmlaned.textproto)
#
# Components: "runtime" (daemon, CLI, unit, config, docs) and "dev" (headers,
# static libraries, CMake and pkg-config files); CPack makes one .deb of each.
include_guard(GLOBAL)
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

if(NOT SHMLANE_BUILD_CONTROL)
  message(STATUS "shmlane_install: SHMLANE_BUILD_CONTROL is OFF; no install rules")
  return()
endif()

set(SHMLANE_INSTALL_INCLUDEDIR ${CMAKE_INSTALL_INCLUDEDIR}/shmlane)
set(SHMLANE_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/shmlane)

# --- the client library and what it links, as an export set -----------------
# shmlane_cc_library puts the source and build trees on the include path; an
# installed target must not point there, so the exported ones get the same
# paths for the build tree only and the installed headers' root otherwise.
set(_shmlane_exported shmlane_client shmlane_client_c shmlane_dataplane shmlane_protos)
foreach(target IN LISTS _shmlane_exported)
  get_target_property(_dirs ${target} INTERFACE_INCLUDE_DIRECTORIES)
  set(_wrapped "")
  foreach(dir IN LISTS _dirs)
    if(dir MATCHES "^\\$<")  # already a generator expression
      list(APPEND _wrapped "${dir}")
    else()
      list(APPEND _wrapped "$<BUILD_INTERFACE:${dir}>")
    endif()
  endforeach()
  list(APPEND _wrapped "$<INSTALL_INTERFACE:${SHMLANE_INSTALL_INCLUDEDIR}>")
  set_property(TARGET ${target} PROPERTY INTERFACE_INCLUDE_DIRECTORIES "${_wrapped}")
endforeach()
set_target_properties(shmlane_client PROPERTIES EXPORT_NAME client)
set_target_properties(shmlane_client_c PROPERTIES EXPORT_NAME client_c)
set_target_properties(shmlane_dataplane PROPERTIES EXPORT_NAME dataplane)
set_target_properties(shmlane_protos PROPERTIES EXPORT_NAME protos)

install(TARGETS ${_shmlane_exported}
  EXPORT shmlaneTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)
install(EXPORT shmlaneTargets
  NAMESPACE shmlane::
  DESTINATION ${SHMLANE_INSTALL_CMAKEDIR}
  COMPONENT dev)
configure_package_config_file(
  ${PROJECT_SOURCE_DIR}/cmake/shmlaneConfig.cmake.in
  ${PROJECT_BINARY_DIR}/cmake/shmlaneConfig.cmake
  INSTALL_DESTINATION ${SHMLANE_INSTALL_CMAKEDIR})
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/cmake/shmlaneConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMinorVersion)
install(FILES
    ${PROJECT_BINARY_DIR}/cmake/shmlaneConfig.cmake
    ${PROJECT_BINARY_DIR}/cmake/shmlaneConfigVersion.cmake
  DESTINATION ${SHMLANE_INSTALL_CMAKEDIR}
  COMPONENT dev)

# pkg-config: the libraries are static, so everything they need is in
# Requires/Libs (not .private): `pkg-config --cflags --libs shmlane` links.
# The absl list is the union of what dataplane and client name in DEPS; the
# install test links a program with it, so a missing one fails there.
set(SHMLANE_PC_ABSL_REQUIRES
  "absl_status absl_statusor absl_strings absl_time absl_synchronization absl_function_ref absl_flat_hash_map absl_flat_hash_set absl_node_hash_map")
file(RELATIVE_PATH SHMLANE_PC_UP /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
foreach(pc shmlane shmlane-c)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/${pc}.pc.in ${PROJECT_BINARY_DIR}/cmake/${pc}.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/cmake/${pc}.pc
    DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)
endforeach()

# Public headers: the client API and the data-plane headers it includes.
# clients/internal/ stays private (nothing public includes it).
install(FILES
    ${PROJECT_SOURCE_DIR}/clients/attach_options.h
    ${PROJECT_SOURCE_DIR}/clients/consumer.h
    ${PROJECT_SOURCE_DIR}/clients/producer.h
    ${PROJECT_SOURCE_DIR}/clients/request_reply.h
    ${PROJECT_SOURCE_DIR}/clients/shmlane.h
  DESTINATION ${SHMLANE_INSTALL_INCLUDEDIR}/clients
  COMPONENT dev)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/dataplane/
  DESTINATION ${SHMLANE_INSTALL_INCLUDEDIR}/dataplane
  COMPONENT dev
  FILES_MATCHING PATTERN "*.h")

# --- the daemon and the CLI ------------------------------------------------
install(TARGETS shmlaned shmlanectl
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)

# systemd looks in <prefix>/lib/systemd/system for /usr and /usr/local. The
# unit names /usr/bin/shmlaned; rewritten at install time for another prefix
# (file(INSTALL) adds DESTDIR, which CPack uses).
# Staged under a random name: installs may run side by side (tests).
set(SHMLANE_UNIT_SOURCE ${PROJECT_SOURCE_DIR}/deploy/systemd/shmlaned.service)
install(CODE "
  file(READ \"${SHMLANE_UNIT_SOURCE}\" _unit)
  string(REPLACE \"/usr/bin/shmlaned\" \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR}/shmlaned\" _unit \"\${_unit}\")
  string(RANDOM LENGTH 12 _tag)
  set(_staged \"${PROJECT_BINARY_DIR}/deploy/unit-\${_tag}/shmlaned.service\")
  file(WRITE \"\${_staged}\" \"\${_unit}\")
  file(INSTALL \"\${_staged}\"
    DESTINATION \"\${CMAKE_INSTALL_PREFIX}/lib/systemd/system\"
    PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
  file(REMOVE_RECURSE \"${PROJECT_BINARY_DIR}/deploy/unit-\${_tag}\")
" COMPONENT runtime)
install(FILES ${PROJECT_SOURCE_DIR}/deploy/config/shmlaned.textproto
  DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples COMPONENT runtime)

set(_shmlane_docs README.md CHANGELOG.md docs/architecture.md docs/deployment.md
  docs/operations.md docs/protocol.md docs/security.md docs/shm_layout.md)
foreach(doc IN LISTS _shmlane_docs)
  if(EXISTS ${PROJECT_SOURCE_DIR}/${doc})
    install(FILES ${PROJECT_SOURCE_DIR}/${doc} DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT runtime)
  endif()
endforeach()

include(shmlane_cpack)

# Man pages shmlaned(8) and shmlanectl(1): the programs' own --help and
# --version through help2man, plus docs/man/*.h2m (description, signals,
# files, exit status). Built with the binaries so that they never disagree.
find_program(SHMLANE_HELP2MAN help2man)
if(SHMLANE_HELP2MAN)
  set(_man_dir ${PROJECT_BINARY_DIR}/man)
  add_custom_command(OUTPUT ${_man_dir}/shmlaned.8 ${_man_dir}/shmlaned.8.gz
    COMMAND ${CMAKE_COMMAND} -E make_directory ${_man_dir}
    COMMAND ${SHMLANE_HELP2MAN} --no-info --no-discard-stderr --section 8
      --name "node-local shared-memory IPC daemon"
      --include ${PROJECT_SOURCE_DIR}/docs/man/shmlaned.h2m
      --output ${_man_dir}/shmlaned.8 $<TARGET_FILE:shmlaned>
    COMMAND gzip -9n -f -k ${_man_dir}/shmlaned.8
    DEPENDS shmlaned ${PROJECT_SOURCE_DIR}/docs/man/shmlaned.h2m VERBATIM)
  add_custom_command(OUTPUT ${_man_dir}/shmlanectl.1 ${_man_dir}/shmlanectl.1.gz
    COMMAND ${CMAKE_COMMAND} -E make_directory ${_man_dir}
    COMMAND ${SHMLANE_HELP2MAN} --no-info --no-discard-stderr --section 1
      --name "command-line client of the shmlane daemon"
      --include ${PROJECT_SOURCE_DIR}/docs/man/shmlanectl.h2m
      --output ${_man_dir}/shmlanectl.1 $<TARGET_FILE:shmlanectl>
    COMMAND gzip -9n -f -k ${_man_dir}/shmlanectl.1
    DEPENDS shmlanectl ${PROJECT_SOURCE_DIR}/docs/man/shmlanectl.h2m VERBATIM)
  add_custom_target(shmlane_man ALL DEPENDS ${_man_dir}/shmlaned.8.gz ${_man_dir}/shmlanectl.1.gz)
  install(FILES ${_man_dir}/shmlaned.8.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man8 COMPONENT runtime)
  install(FILES ${_man_dir}/shmlanectl.1.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT runtime)
else()
  message(STATUS "help2man not found: no man pages (scripts/install-deps.sh installs it)")
endif()
