# CPack: two Debian packages from the install components.
#   shmlane      daemon, CLI, systemd unit, docs (runtime)
#   shmlane-dev  headers, static client libraries, CMake and pkg-config files
# `make package` (or `cpack --config build/release/CPackConfig.cmake`) writes
# build/release/shmlane_<version>_<arch>.deb and shmlane-dev_<version>_<arch>.deb.
# Depends of the runtime package come from dpkg-shlibdeps (Debian's
# libgrpc++1.51, libprotobuf32, libabsl20220623, ...).
include_guard(GLOBAL)

set(SHMLANE_PACKAGE_MAINTAINER "shmlane maintainers <maintainers@shmlane.invalid>"
  CACHE STRING "Maintainer field of the .deb packages")

# 0.1.0-dev -> 0.1.0~dev: sorts before 0.1.0, as a pre-release should.
string(REPLACE "-" "~" SHMLANE_DEB_VERSION "${SHMLANE_VERSION_STRING}")

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME shmlane)
set(CPACK_PACKAGE_VENDOR "shmlane")
set(CPACK_PACKAGE_VERSION ${SHMLANE_DEB_VERSION})
set(CPACK_PACKAGE_CONTACT ${SHMLANE_PACKAGE_MAINTAINER})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_PACKAGE_DIRECTORY ${PROJECT_BINARY_DIR}/packages)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL runtime dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)

set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME shmlane)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION net)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SHLIBDEPS ON)
set(CPACK_COMPONENT_RUNTIME_DESCRIPTION
  "node-local IPC over shared memory: daemon and CLI
shmlane moves messages between processes on one machine through sealed
shared-memory rings with eventfd doorbells. The daemon, shmlaned, hands
out lanes (memfds) to processes that its grants and quotas allow, serves
a gRPC control API on a Unix socket and exports lane counters to
Prometheus. This package holds shmlaned, shmlanectl and a hardened
systemd unit (not enabled by default).")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME shmlane-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
# What the static libraries need at link time (headers and .so links).
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "libgrpc++-dev, libprotobuf-dev, libabsl-dev, pkg-config | pkgconf")
set(CPACK_COMPONENT_DEV_DESCRIPTION
  "node-local IPC over shared memory: client library (development)
Headers and static libraries of the shmlane client (C++ and a C ABI) with
a CMake package (find_package(shmlane CONFIG): shmlane::client,
shmlane::client_c) and pkg-config files (shmlane, shmlane-c).")

# Debian wants a copyright file and a changelog in each package's doc folder.
string(TIMESTAMP SHMLANE_DEB_DATE "%a, %d %b %Y %H:%M:%S +0000" UTC)
foreach(pkg shmlane shmlane-dev)
  set(_dir ${PROJECT_BINARY_DIR}/deploy/debian/${pkg})
  file(MAKE_DIRECTORY ${_dir})
  file(WRITE ${_dir}/changelog
"${pkg} (${SHMLANE_DEB_VERSION}) unstable; urgency=medium

  * Built from shmlane ${SHMLANE_VERSION_STRING}; see
    /usr/share/doc/shmlane/CHANGELOG.md for the changes.

 -- ${SHMLANE_PACKAGE_MAINTAINER}  ${SHMLANE_DEB_DATE}
")
  if(pkg STREQUAL "shmlane")
    set(_component runtime)
  else()
    set(_component dev)
  endif()
  # gzip -9n (reproducible: no name, no time stamp), at configure time.
  execute_process(COMMAND gzip -9nf "${_dir}/changelog" RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "gzip -9nf ${_dir}/changelog failed")
  endif()
  install(FILES ${_dir}/changelog.gz ${PROJECT_SOURCE_DIR}/deploy/debian/copyright
    DESTINATION share/doc/${pkg} COMPONENT ${_component})
endforeach()

include(CPack)
