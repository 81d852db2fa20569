# labctl: `make test` on a fresh Debian 12 machine (as root) installs what is missing,
# builds, and runs every test. `make up` brings up the quickstart lab.

PYTHON    := /usr/bin/python3
BUILD     := build
JOBS      ?= $(shell nproc)
LAB       ?= labs/quickstart/topology.json
CMAKE_ARGS ?=

# The fuzz target and the fuzz smoke test need clang and its libFuzzer/sanitizer
# runtimes (Debian 12: clang-14).
FUZZ_DEPS := clang libclang-rt-14-dev

# Build and test dependencies, all from Debian's archive: everything the tests run is
# here (valgrind: the no-leak test; time: bench/run.py's /usr/bin/time; procps: pgrep,
# ps, sysctl; libcap2-bin: capsh), so that no test skips for want of a program.
DEPS := cmake g++ make pkg-config libmnl-dev nlohmann-json3-dev libboost-dev \
        pybind11-dev pybind11-json-dev libvalijson-dev libcli11-dev python3-dev \
        python3-pytest python3-pytest-xdist libgtest-dev libgmock-dev graphviz python3-jsonschema \
        iproute2 iputils-ping python3-pyroute2 strace \
        valgrind time procps libcap2-bin libpcap-dev tshark $(FUZZ_DEPS)
# Packaging: the .deb (CPack needs dpkg-shlibdeps and file), man and the shells the completion
# tests run, a venv for the pip install test.
DEPS += dpkg-dev file man-db groff-base zsh fish python3-venv
# The live view's browser test: a real headless Chromium driven by Selenium.
DEPS += chromium chromium-driver python3-selenium
# `make lint`: clang-format, flake8, mypy (with stubtest).
LINT_DEPS := clang-format-14 python3-flake8 python3-mypy
DEPS += $(LINT_DEPS)

# The test VM's packages (qemu-system-x86, busybox-static, cpio, kmod, xz-utils) are
# installed by tests/vm/prepare, which vm-test runs. `LABCTL_VM=skip make test` skips
# the VM and says so at the end of the run.
LABCTL_VM ?=
FUZZ_BUILD := build-fuzz
FUZZ_SECONDS ?= 60
ASAN_BUILD := build-asan

.PHONY: all deps fuzz-deps build test unit pytest vm-test up down install bench bench-capture clean fuzz sanitize \
        deb package-test lint lint-layers lint-format lint-python lint-types format

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

# -rs names every skip; in CI (CI=true) a skip not on conftest.ALLOWED_SKIPS fails.
pytest: build
	PYTHONPATH=$(BUILD)/python LABCTL=$(abspath $(BUILD))/labctl \
	  $(PYTHON) -m pytest -q -rs tests/py

# Tests of kernel features this kernel lacks run in a VM with a stock kernel, with the
# VM's own proofs (tests/vm/kernel-tests). A VM that cannot run fails this target; only
# LABCTL_VM=skip skips it.
vm-test: build
	BUILD=$(abspath $(BUILD)) LABCTL_VM=$(LABCTL_VM) tests/vm/kernel-tests

# The house rules (CONTRIBUTING.md): the include rule of core/ (docs/architecture.md), the C++
# format (.clang-format), flake8 (.flake8) and mypy on the package, with stubtest proving that
# python/labctl/_core.pyi matches the compiled module. `make test` runs it first.
CLANG_FORMAT := clang-format-14
CXX_SOURCES = $(shell find core python/src tests -name '*.cpp' -o -name '*.hpp' | sort)
PY_DIRS := python tests bench tools

lint: lint-layers lint-format lint-python lint-types

lint-layers: deps
	$(PYTHON) tools/check_layers.py

lint-format: deps
	$(CLANG_FORMAT) --style=file --dry-run -Werror $(CXX_SOURCES)

lint-python: deps
	$(PYTHON) -m flake8 $(PY_DIRS)

# stubtest imports the compiled labctl._core (so this one needs the build) and compares it
# with the stubs of the source tree (MYPYPATH), not the build's copy of them.
lint-types: build
	cd python && $(PYTHON) -m mypy labctl
	MYPYPATH=python PYTHONPATH=$(abspath $(BUILD))/python $(PYTHON) -m mypy.stubtest labctl._core \
	  --allowlist python/stubtest-allowlist.txt

# Rewrites every C++ file of core/, python/src and tests/ in the .clang-format style.
format: deps
	$(CLANG_FORMAT) --style=file -i $(CXX_SOURCES)

test: lint unit pytest vm-test sanitize
ifeq ($(LABCTL_VM),skip)
	@echo "************************************************************************"
	@echo "* make test: the kernel-feature tests in the test VM were SKIPPED       *"
	@echo "* (LABCTL_VM=skip): netem, tbf, 802.1Q, VLAN filtering, dummy and the   *"
	@echo "* vlans and impairments labs were NOT tested unless this kernel has them *"
	@echo "************************************************************************"
endif

# libFuzzer over parse + validate (tests/fuzz), FUZZ_SECONDS long, ASan+UBSan, seeded from
# tests/data, labs/ and tests/fuzz/extra (the build copies them to $(FUZZ_BUILD)/seed); new
# inputs go to $(FUZZ_BUILD)/corpus, a crashing one to $(FUZZ_BUILD)/crash-*.
fuzz: deps fuzz-deps
	CXX=clang++ cmake -S tests/fuzz -B $(FUZZ_BUILD)
	cmake --build $(FUZZ_BUILD) -j $(JOBS)
	mkdir -p $(FUZZ_BUILD)/corpus
	$(FUZZ_BUILD)/topology_fuzz -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	  -max_len=65536 -artifact_prefix=$(abspath $(FUZZ_BUILD))/ $(FUZZ_BUILD)/corpus $(FUZZ_BUILD)/seed

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

# Benchmarks (bench/README.md): N list, repetitions, topologies and tools are knobs; the
# campus (issue 20) has its own sizes.
BENCH_N        ?= 10 100 1000 2000
BENCH_CAMPUS_N ?= 1000 5000 10000
BENCH_REPS     ?=
bench: build
	BENCH_N="$(BENCH_N)" BENCH_CAMPUS_N="$(BENCH_CAMPUS_N)" BENCH_REPS="$(BENCH_REPS)" \
	  LABCTL=$(abspath $(BUILD))/labctl $(PYTHON) bench/run.py
	BENCH_REPS="$(BENCH_REPS)" LABCTL=$(abspath $(BUILD))/labctl $(PYTHON) bench/checks.py
	BENCH_REPS="$(BENCH_REPS)" LABCTL=$(abspath $(BUILD))/labctl $(PYTHON) bench/rootless.py
	$(MAKE) bench-capture

# `labctl capture --all` on a 100-node lab during all-pairs: drops and CPU (RESULTS-capture.md).
bench-capture: build
	BENCH_REPS="$(BENCH_REPS)" LABCTL=$(abspath $(BUILD))/labctl $(PYTHON) bench/capture.py

# The command, the Python package (with its pytest11 entry point), labctl(1), the bash/zsh/fish
# completions, the courseware and the schema, under /usr/local (docs/install.md).
install: build
	cmake --install $(BUILD)

# The Debian package: $(BUILD)/labctl_<version>_<arch>.deb (CPack, cmake/packaging.cmake).
deb: build
	cd $(BUILD) && cpack -G DEB

# The .deb built in one fresh Debian 12 chroot, installed with apt-get in a second one and
# used there (tests/package/two-chroot.sh). 20-40 minutes: not part of `make test`.
# PACKAGE_TEST_DEB=build/labctl_<v>_<arch>.deb runs only the second half, with that file.
FRESH_DEBIAN ?= $(abspath ../shared/tools/fresh-debian.sh)
package-test:
	FRESH_DEBIAN=$(FRESH_DEBIAN) tests/package/two-chroot.sh

clean:
	rm -rf $(BUILD)
