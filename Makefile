# image-gateway: developer and CI entry points.
#
#   make run          serve the sample pictures on http://127.0.0.1:8080 (ARGS="--config FILE")
#   make test         system packages + test extras, then pytest (PYTEST_ARGS="-k foo -x")
#   make test-container  the image built with podman and tested as operators run it
#                     (tests/container; not part of `make test`; PYTEST_ARGS too)
#   make lint         ruff + mypy
#   make bench        benchmarks (writes bench/RESULTS.md; BENCH_ARGS=--profile: py-spy;
#                     BENCH_SOAK=1: the soak run too)
#   make soak         10-minute soak, faults injected (writes bench/SOAK.md; SOAK_QUICK=1: 60 s)
#   make system-deps  redis-server, nginx, chromium, openssl, curl, kubectl, node, iproute2,
#                     iptables from Debian packages (as root)
#   make clean        caches and var/;  make distclean also removes the venv

VENV ?= .venv
PY ?= python3
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet

ARGS ?=
PYTEST_ARGS ?=
SAMPLES ?= var/samples
SYSTEM_DEPS ?= redis-server nginx chromium openssl curl kubectl node ip iptables
# make test-container: podman (daemonless: no Docker engine here) with runc, catatonit
# for compose's `init: true`, debootstrap for the local base image.
CONTAINER_DEPS ?= podman runc catatonit debootstrap

# Stamps record that the venv holds what pyproject.toml asks for; they are
# rebuilt (pip install again) whenever pyproject.toml is newer.
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

LINT_DIRS := $(wildcard gateway tests bench tools)

.DEFAULT_GOAL := help
.PHONY: help run test test-container lint bench soak system-deps clean distclean

help:
	@sed -n 's/^#   //p' $(MAKEFILE_LIST)

# The venv itself, created once with the system interpreter.
$(BIN)/python:
	$(PY) -m venv $(VENV)

# Runtime dependencies only: enough for `make run` on a bare machine.
$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	@touch $@

# Runtime + test extras (pytest, moto, Pillow, ruff, mypy...). A superset of
# the runtime install, so it refreshes that stamp too.
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[test]'
	@touch $(RUN_STAMP) $@

run: $(RUN_STAMP)
	$(BIN)/python tools/make_samples.py $(SAMPLES)
	exec $(BIN)/python -m gateway $(ARGS)

# Real redis-server, nginx and chromium binaries: the tests start their own instances
# (chromium: the headless browser test of /admin/dashboard).
system-deps:
	@bash tools/ensure-system-deps.sh $(SYSTEM_DEPS)

test: system-deps $(TEST_STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

# The container (issue 14): the base image first, outside pytest, so its one-time
# debootstrap shows its progress (later runs find it cached by its inputs' hash and
# go straight on); then tests/container builds deploy/Dockerfile from a clean context
# and runs it against real Redis, S3 (moto) and nginx. No skips: a machine where
# podman cannot run fails here with the reason.
test-container: system-deps $(TEST_STAMP)
	@bash tools/ensure-system-deps.sh $(CONTAINER_DEPS)
	@bash tools/container-base-image.sh >/dev/null
	$(BIN)/pytest tests/container $(PYTEST_ARGS)

# Runs every checker, then fails if any of them did.
lint: $(TEST_STAMP)
	@status=0; \
	$(BIN)/ruff check $(LINT_DIRS) || status=1; \
	$(BIN)/mypy || status=1; \
	exit $$status

# Benchmarks (bench/, not part of `make test`): wrk joins redis-server and nginx from
# Debian; the test extra brings Pillow and moto; py-spy (for BENCH_ARGS=--profile) goes
# into the venv only, never into the project's dependencies. Knobs by environment:
# BENCH_DURATION=s per scenario (10), BENCH_QUICK=1 (2 s smoke run), see bench/settings.py.
BENCH_ARGS ?=
BENCH_SOAK ?= 0
bench: $(TEST_STAMP)
	@bash tools/ensure-system-deps.sh $(SYSTEM_DEPS) wrk
	@test -x $(BIN)/py-spy || $(PIP) install 'py-spy>=0.3.14'
	$(BIN)/python -m bench $(BENCH_ARGS)
ifeq ($(BENCH_SOAK),1)
	$(BIN)/python -m bench.soak $(SOAK_ARGS)
endif

# The soak run (bench/soak.py; issue 7): 10 minutes of mixed traffic against the gateway
# with S3 and Redis faults injected, every answer checked; RSS, fds and the disk cache
# sampled. Writes bench/SOAK.md, exits 1 when a rule is broken (wrong bytes, old bytes
# after a purge, a 500, an unexpected status, a hang, a worker restart, RSS +20 % after
# warm-up). Also part of
# `make bench` with BENCH_SOAK=1. Knobs: SOAK_DURATION=s (600), SOAK_QUICK=1 (60 s),
# SOAK_RATE, SOAK_CONCURRENCY, ... (bench/soak.py).
SOAK_ARGS ?=
soak: $(TEST_STAMP)
	@bash tools/ensure-system-deps.sh $(SYSTEM_DEPS) wrk
	@test -x $(BIN)/py-spy || $(PIP) install 'py-spy>=0.3.14'
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf var build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
