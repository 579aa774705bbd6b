# Thin wrapper over the CMake presets. `make run` and `make test` are the two
# commands a new machine needs: each installs missing Debian packages first.
JOBS ?= $(shell nproc)
CTEST_ARGS ?=
RUN_ARGS ?=

.PHONY: all deps build run test bench asan tsan fuzz thread-safety format format-check tidy clean

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

bench: build
	./build/release/bench/shmlane-bench --suite quick

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

clean:
	rm -rf build
