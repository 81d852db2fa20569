# labctl: `make test` on a fresh Debian 12 machine (as root) installs what is missing,
# builds, and runs every test. `make up` brings up the quickstart lab.

PYTHON    := /usr/bin/python3
BUILD     := build
JOBS      ?= $(shell nproc)
LAB       ?= labs/quickstart/topology.json
CMAKE_ARGS ?=

# Build and test dependencies, all from Debian's archive.
DEPS := cmake g++ make pkg-config libmnl-dev nlohmann-json3-dev libboost-dev \
        pybind11-dev pybind11-json-dev libvalijson-dev libcli11-dev python3-dev \
        python3-pytest libgtest-dev libgmock-dev graphviz python3-jsonschema \
        iproute2 iputils-ping python3-pyroute2 chromium chromium-driver python3-selenium

# The fuzz target needs clang and its libFuzzer/sanitizer runtimes (Debian 12: clang-14).
FUZZ_DEPS := clang libclang-rt-14-dev
FUZZ_BUILD := build-fuzz
FUZZ_SECONDS ?= 60
ASAN_BUILD := build-asan

.PHONY: all deps fuzz-deps build test unit pytest vm-test up down install bench clean fuzz sanitize

all: build

# Installs the Debian packages named in $(1) that are absent; apt-get runs only then.
define install_missing
	@missing=$$(for p in $(1); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

deps:
	$(call install_missing,$(DEPS))

fuzz-deps:
	$(call install_missing,$(FUZZ_DEPS))

$(BUILD)/CMakeCache.txt: CMakeLists.txt | deps
	cmake -S . -B $(BUILD) -DPython3_EXECUTABLE=$(PYTHON) $(CMAKE_ARGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

unit: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

pytest: build
	PYTHONPATH=$(BUILD)/python LABCTL=$(abspath $(BUILD))/labctl \
	  $(PYTHON) -m pytest -q tests/py

# Tests of kernel features this kernel lacks run in a VM with a stock kernel (tests/vm).
vm-test: build
	BUILD=$(abspath $(BUILD)) tests/vm/kernel-tests

test: unit pytest vm-test sanitize

# libFuzzer over parse + validate (tests/fuzz), FUZZ_SECONDS long, ASan+UBSan; new
# inputs go to $(FUZZ_BUILD)/corpus, a crashing one to $(FUZZ_BUILD)/crash-*.
fuzz: deps fuzz-deps
	CXX=clang++ cmake -S tests/fuzz -B $(FUZZ_BUILD)
	cmake --build $(FUZZ_BUILD) -j $(JOBS)
	mkdir -p $(FUZZ_BUILD)/corpus
	$(FUZZ_BUILD)/topology_fuzz -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	  -max_len=65536 -artifact_prefix=$(abspath $(FUZZ_BUILD))/ $(FUZZ_BUILD)/corpus tests/fuzz/corpus

# The unit tests under ASan+UBSan, in a separate tree. -O0 and a unity build keep that
# second build short (about 2 min on 2 vCPUs instead of 8+); -g1 keeps file:line in
# the reports. The test list must contain the sanitizers' own death tests: proof that
# the binary is instrumented.
SANITIZE_FLAGS := -DLABCTL_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O0 -g1" \
  -DCMAKE_UNITY_BUILD=ON -DCMAKE_UNITY_BUILD_BATCH_SIZE=6
sanitize: deps
	cmake -S . -B $(ASAN_BUILD) -DPython3_EXECUTABLE=$(PYTHON) $(SANITIZE_FLAGS) $(CMAKE_ARGS)
	cmake --build $(ASAN_BUILD) -j $(JOBS) --target labctl_unit_tests
	$(ASAN_BUILD)/tests/labctl_unit_tests --gtest_list_tests | grep -q SanitizerDeathTest
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ./tests/labctl_unit_tests

up: build
	$(BUILD)/labctl up $(LAB)
	$(BUILD)/labctl status $$($(PYTHON) -c 'import json,sys; print(json.load(open(sys.argv[1]))["name"])' $(LAB))

down: build
	$(BUILD)/labctl down $(LAB)

# Benchmarks (bench/README.md): N list, repetitions, topologies and tools are knobs.
BENCH_N    ?= 10 100 1000 2000
BENCH_REPS ?= 3
bench: build
	BENCH_N="$(BENCH_N)" BENCH_REPS="$(BENCH_REPS)" LABCTL=$(abspath $(BUILD))/labctl \
	  $(PYTHON) bench/run.py

install: build
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD)
