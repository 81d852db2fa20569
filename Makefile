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
        iproute2 iputils-ping python3-pyroute2

.PHONY: all deps build test unit pytest vm-test up down install bench clean

all: build

# Installs only what is absent; apt-get runs only when something is missing.
deps:
	@missing=$$(for p in $(DEPS); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi

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

test: unit pytest vm-test

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
