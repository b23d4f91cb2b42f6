# The two commands of the README: `make run` and `make test`.
# Needs Python 3.11+, Java 17+ and Maven on PATH; everything else is installed here.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
DEV_CONFIG := devstack/dev.ini
TOPICS ?= demo_log collect_system_info

.PHONY: setup run test unit consume bench clean

# The C modules (the batch producer, the message builder, the reader) are built by the editable install: again
# when their sources change.
$(STAMP): pyproject.toml logagent/sinks/kafka/_batchproduce.c logagent/pipeline/_format.c \
          logagent/sources/files/_readat.c
	devstack/system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

setup: $(STAMP)
	devstack/system-deps.sh
	$(BIN)/python -m devstack.stack fetch >/dev/null

## Start Kafka and etcd on loopback, seed the dev config's etcd keys, run the agent with
## $(DEV_CONFIG); Ctrl-C stops all (quietly, status 0). No shell in the recipe: make runs
## run.sh directly.
run: setup
	devstack/run.sh $(BIN)/python $(DEV_CONFIG)

## The whole test suite against a real Kafka broker and etcd server that it starts itself, and the
## type check and lint (`make lint`); all run, and it fails when any fails. The fault suite
## (tests/integration/faults) and the rest run side by side, each with its own broker and etcd: most
## of their time is spent waiting on the servers, and the two halves take about as long. The fault
## suite's report is printed when both are done. With PYTEST_ARGS (a file, -k, ...) one run does it all.
test: setup
	@status=0; \
	$(MAKE) --no-print-directory lint || status=1; \
	if [ -n "$(PYTEST_ARGS)" ]; then \
		$(BIN)/python -m pytest $(PYTEST_ARGS) || status=1; \
	else \
		faults_log=$$(mktemp); \
		$(BIN)/python -m pytest -p no:cacheprovider --durations=10 tests/integration/faults >"$$faults_log" 2>&1 & faults=$$!; \
		$(BIN)/python -m pytest --durations=10 --ignore=tests/integration/faults || status=1; \
		wait $$faults || status=1; \
		echo "======================== tests/integration/faults ========================"; \
		cat "$$faults_log"; rm -f "$$faults_log"; \
	fi; \
	exit $$status

## Unit tests only: no servers, no venvs built, nothing installed (tests marked `installs`, the
## packaging checks that pip-install tools or replay the image's install, run in `make test`).
unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit tests/kit tests/packaging -m "not installs" $(PYTEST_ARGS)

## Type check (mypy --strict on logagent/), lint (ruff on logagent tests bench devstack deploy) and the
## import layers (lint-imports: folders import downwards only, see CONTRIBUTING.md); all run, and
## the target fails when any finds something. Settings: pyproject.toml.
.PHONY: lint
lint: $(STAMP)
	@status=0; \
	$(BIN)/mypy logagent || status=1; \
	$(BIN)/ruff check logagent tests bench devstack deploy || status=1; \
	$(BIN)/lint-imports || status=1; \
	exit $$status

## Print what `make run` ships to Kafka (run in a second terminal), each topic from its
## beginning; topics created later are picked up. TOPICS='a b' for others ('^demo_.*': a regex).
consume: $(STAMP)
	$(BIN)/python -m devstack.consume --config $(DEV_CONFIG) $(foreach t,$(TOPICS),'$(t)')

## The CLI against `make run`'s stack and keys (the README's commands with -c $(DEV_CONFIG)).
.PHONY: dev-check dev-show
dev-check: $(STAMP)
	$(BIN)/logagent check -c $(DEV_CONFIG)

dev-show: $(STAMP)
	$(BIN)/logagent config show -c $(DEV_CONFIG)

## Benchmark against the dev stack's own broker (about 10 min); writes bench/RESULTS.md.
## BENCH_ARGS=--quick for a smoke run, BENCH_ARGS='--only latency' for one scenario.
## Then many files and a Kubernetes node beside Fluent Bit (~6 and ~5 min; their tables are printed:
## RESULTS.md by hand) and the fleet control plane at 1,000 simulated hosts (~3 min; replaces its section).
bench: setup
	$(BIN)/python bench/bench.py $(BENCH_ARGS)
	$(BIN)/python bench/many_files_peer.py
	$(BIN)/python bench/many_files_peer.py --files 100 --rate 100
	$(BIN)/python bench/many_files_peer.py --files 2000 --max-open 512 --shippers logagent
	$(BIN)/python bench/k8s_node.py
	$(BIN)/python bench/fleet_scale.py

## The sidecar image logagent:<version>, with no registry and no network in the build: a base made
## with debootstrap from Debian's packages and a wheelhouse made here (deploy/docker/image.py; starts
## dockerd when none runs). BASE_IMAGE=python:3.11-slim builds on that image instead.
.PHONY: image
image: $(STAMP)
	$(BIN)/python -m deploy.docker.image $(if $(BASE_IMAGE),--base $(BASE_IMAGE))

clean:
	rm -rf $(VENV) .stack build *.egg-info
