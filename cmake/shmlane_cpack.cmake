# CPack: Debian packages from the install components.
#   shmlane         daemon, CLI, systemd unit, docs (runtime)
#   shmlane-dev     headers, static client libraries, CMake and pkg-config files
#   python3-shmlane the Python package in /usr/lib/python3/dist-packages
#                   (python3; only when clients/python built it)
# `make package` (or `cpack --config build/release/CPackConfig.cmake`) writes
# build/release/packages/shmlane_<version>_<arch>.deb, shmlane-dev_... and
# python3-shmlane_....
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
set(_packages shmlane shmlane-dev)
if(TARGET _shmlane)
  list(APPEND CPACK_COMPONENTS_ALL python3)
  list(APPEND _packages python3-shmlane)
endif()
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

# The Python package. The extension is built for one python3 version
# (its file name says cpython-3XY), hence the version range, as dh_python3
# would write it; dpkg-shlibdeps adds the libraries it links (libabsl,
# libprotobuf, libstdc++). python3-grpcio and python3-protobuf are only
# Recommends: the data plane (import shmlane: Producer, Consumer, Client,
# Server, Publisher, Subscriber) needs neither, only shmlane.control
# imports them (a missing one raises ImportError there, naming it), and a
# client on a small image should not pull gRPC in to move frames. The
# daemon is a Suggests: it may run on the host of a container that only
# holds clients.
set(CPACK_DEBIAN_PYTHON3_PACKAGE_NAME python3-shmlane)
set(CPACK_DEBIAN_PYTHON3_PACKAGE_SECTION python)
set(CPACK_DEBIAN_PYTHON3_PACKAGE_SHLIBDEPS ON)
if(SHMLANE_PYTHON_DEB_VERSION)  # 3.11 (clients/python/CMakeLists.txt)
  string(REPLACE "." ";" _v "${SHMLANE_PYTHON_DEB_VERSION}")
  list(GET _v 0 _major)
  list(GET _v 1 _minor)
  math(EXPR _next "${_minor} + 1")
  set(CPACK_DEBIAN_PYTHON3_PACKAGE_DEPENDS
    "python3 (>= ${_major}.${_minor}~), python3 (<< ${_major}.${_next})")
endif()
set(CPACK_DEBIAN_PYTHON3_PACKAGE_RECOMMENDS "python3-grpcio, python3-protobuf")
set(CPACK_DEBIAN_PYTHON3_PACKAGE_SUGGESTS "shmlane")
set(CPACK_COMPONENT_PYTHON3_DESCRIPTION
  "node-local IPC over shared memory: Python 3 client
The shmlane package for Python 3: Producer and Consumer (STREAM), Client
and Server (REQUEST_REPLY), Publisher and Subscriber (BROADCAST) over the
shmlane client library, with zero-copy views of the rings, and
shmlane.control, the daemon's control API over gRPC (needs python3-grpcio
and python3-protobuf).")
# Byte-compiled at install and cleaned at removal, as dh_python3's
# maintainer scripts do (no .pyc in the package, none left behind).
set(_py_scripts ${PROJECT_BINARY_DIR}/deploy/debian/python3-shmlane)
file(MAKE_DIRECTORY ${_py_scripts})
file(WRITE ${_py_scripts}/postinst "#!/bin/sh
set -e
if command -v py3compile >/dev/null 2>&1; then
	py3compile -p python3-shmlane
fi
")
file(WRITE ${_py_scripts}/prerm "#!/bin/sh
set -e
if command -v py3clean >/dev/null 2>&1; then
	py3clean -p python3-shmlane
fi
")
set(CPACK_DEBIAN_PYTHON3_PACKAGE_CONTROL_EXTRA ${_py_scripts}/postinst ${_py_scripts}/prerm)

# Debian wants a copyright file and a changelog in each package's doc folder.
string(TIMESTAMP SHMLANE_DEB_DATE "%a, %d %b %Y %H:%M:%S +0000" UTC)
foreach(pkg IN LISTS _packages)
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
  elseif(pkg STREQUAL "shmlane-dev")
    set(_component dev)
  else()
    set(_component python3)
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
