# The two commands of the README: `make run` and `make test`.
# Needs Python 3.11+, Java 17+ and Maven on PATH; everything else is installed here.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: setup run test unit consume bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

setup: $(STAMP)
	devstack/system-deps.sh
	$(BIN)/python -m devstack.stack fetch >/dev/null

## Start Kafka and etcd on loopback, seed this host's etcd keys, run the agent; Ctrl-C stops all.
run: setup
	PYTHON=$(BIN)/python devstack/run.sh

## The whole test suite against a real Kafka broker and etcd server that it starts itself.
test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Unit tests only (no servers).
unit: $(STAMP)
	$(BIN)/python -m pytest --ignore=tests/integration --ignore=tests/faults $(PYTEST_ARGS)

## Print what `make run` ships to Kafka (run in a second terminal).
consume: $(STAMP)
	$(BIN)/python -m devstack.consume --bootstrap 127.0.0.1:9092 demo_log collect_system_info

## Benchmark against the dev stack's own broker (about 7 min); writes bench/RESULTS.md.
## BENCH_ARGS=--quick for a smoke run, BENCH_ARGS='--only latency' for one scenario.
bench: setup
	$(BIN)/python bench/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .stack build *.egg-info
