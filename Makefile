# Thin wrapper over the CMake presets. `make run` and `make test` are the two
# commands a new machine needs: each installs missing Debian packages first.
JOBS ?= $(shell nproc)
CTEST_ARGS ?=
RUN_ARGS ?=

.PHONY: all deps build run test fault bench bench-fanout bench-waiting asan tsan fuzz thread-safety format format-check tidy sbom docs clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	cmake --preset release >/dev/null
	cmake --build --preset release -j $(JOBS)

run: build
	./build/release/control/shmlaned $(RUN_ARGS)

test: build
	ctest --preset release $(CTEST_ARGS)

# The kill matrix (tests/integration/kill_matrix_test.cc) for longer than
# the CI slice: FAULT_SECONDS of SIGKILL rounds; FAULT_SEED=N replays a run.
FAULT_SECONDS ?= 600
fault: build
	SHMLANE_FAULT_SECONDS=$(FAULT_SECONDS) $(if $(FAULT_SEED),SHMLANE_FAULT_SEED=$(FAULT_SEED)) \
	  ./build/release/tests/integration/kill_matrix_test

bench: build
	./build/release/bench/shmlane-bench --suite quick

# Fanout: one publisher to 1, 8 and 32 subscribers, 64 B and 64 KiB, every
# transport, 3 interleaved repeats (the medians in docs/benchmarks.md).
bench-fanout: build
	./build/release/bench/shmlane-bench --suite fanout --repeat 3

# Wait strategies with and without CPU limits (needs root for --cpu-limit;
# ~20 min with 3 repeats). Not part of the CI gate.
bench-waiting: build
	./build/release/bench/shmlane-bench --suite waiting --repeat 3 --gate

asan: deps
	cmake --preset asan >/dev/null
	cmake --build --preset asan -j $(JOBS)
	ctest --preset asan $(CTEST_ARGS)

tsan: deps
	cmake --preset tsan >/dev/null
	cmake --build --preset tsan -j $(JOBS)
	ctest --preset tsan $(CTEST_ARGS)

# Build only: clang's -Wthread-safety checks the lock annotations.
thread-safety: deps
	cmake --preset thread-safety >/dev/null
	cmake --build --preset thread-safety -j $(JOBS)

FUZZ_RUNS ?= 2000000
FUZZ_SECONDS ?= 60
fuzz: deps
	cmake --preset fuzz >/dev/null
	cmake --build --preset fuzz -j $(JOBS)
	scripts/run-fuzz.sh build/fuzz $(FUZZ_SECONDS) $(FUZZ_RUNS)

format:
	git ls-files '*.h' '*.cc' | xargs clang-format -i

format-check:
	git ls-files '*.h' '*.cc' | xargs clang-format --dry-run --Werror

tidy: build
	git ls-files 'dataplane/*.cc' 'control/*.cc' 'clients/*.cc' | xargs clang-tidy -p build/release --quiet

# API reference (Doxygen over the public headers; a warning fails) and the
# man pages (help2man, also built by `make build`).
docs: build
	mkdir -p build/docs
	SHMLANE_SOURCE=$(CURDIR) SHMLANE_DOCS_OUT=$(CURDIR)/build/docs doxygen docs/api/Doxyfile
	@echo "wrote build/docs/html/index.html and build/release/man/"

# CycloneDX SBOM of the Debian packages we build against and load, with the
# license check (scripts/sbom.py).
VERSION := $(shell grep -m1 -o 'shmlane VERSION [0-9.]*' CMakeLists.txt | cut -d' ' -f3)
sbom: build
	scripts/sbom.py --version $(VERSION) --binary build/release/control/shmlaned \
	  --binary build/release/clients/cli/shmlanectl --out build/release/shmlane-$(VERSION).cdx.json --check
	@echo "wrote build/release/shmlane-$(VERSION).cdx.json"

clean:
	rm -rf build

# --- install and packages (cmake/shmlane_install.cmake, cmake/shmlane_cpack.cmake)
# make install [PREFIX=/usr/local] [DESTDIR=...]; make package -> build/release/packages/*.deb
PREFIX ?= /usr/local
.PHONY: install package image deploy-test

install: build
	DESTDIR=$(DESTDIR) cmake --install build/release --prefix $(PREFIX)

package: build
	cd build/release && cpack --config CPackConfig.cmake
	@ls -l build/release/packages/*.deb

# The container image, offline with buildah: build/release/shmlane-image.oci.tar
image: build
	deploy/image/build-offline.sh --build-dir build/release --output build/release/shmlane-image.oci.tar

# Only the deployment tests (image, kubernetes, systemd, install, .deb).
deploy-test: build
	ctest --preset release -L deploy $(CTEST_ARGS)
