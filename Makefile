# Two commands do all set-up on a fresh machine: `make run` and `make test`.
# What the machine needs (venv and Python extras, Docker engine, debootstrap) is
# installed by one script, scripts/bootstrap, which every target below asks.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
WSCTL := $(VENV)/bin/wsctl
BOOTSTRAP := VENV=$(VENV) bash scripts/bootstrap
PYTEST_ARGS ?=

.PHONY: run test doctor clean-room bench bench-quick chaos-smoke chaos-docker lint unit docker images venv machine clean help

help:
	@echo "make run         start the controller with a demo workspace (embedded PostgreSQL, fake LLM)"
	@echo "make test        lint, type-check and run every test (real Docker, real PostgreSQL)"
	@echo "make doctor      check this machine for wsctl: one line per check, with the fix"
	@echo "make clean-room  prove make run and make test work on a fresh machine (clean clones, empty HOME)"

venv:
	@$(BOOTSTRAP) python

docker:
	@$(BOOTSTRAP) docker

# Everything: the venv, the engine, and debootstrap when the agent image needs a base.
machine:
	@$(BOOTSTRAP) python docker debootstrap

images: machine
	$(WSCTL) images build

# The standalone controller with the demo workspace (examples/demo.yaml) wired to
# the project's fake Anthropic-compatible LLM. Ctrl-C stops the controller; the
# workspace container keeps running and is adopted at the next start.
run: images
	$(WSCTL) run --demo

doctor: venv
	$(WSCTL) doctor

# Clean clones of HEAD, an empty HOME, no debootstrap and no wsctl images: make run
# must serve the demo and make test (unit tests) must pass. .ci/run runs it first.
clean-room:
	bash scripts/clean-room

# Controller overhead against raw Docker and docker-compose (docs/performance.md).
# bench-quick checks that the suite works.
bench: machine
	@$(BOOTSTRAP) compose
	$(PY) -m benchmarks.bench

bench-quick: machine
	@$(BOOTSTRAP) compose
	$(PY) -m benchmarks.bench --quick --out benchmarks/results/quick

# The chaos harness against its own controller: 5 workspaces, 30 faults, seed 1.
chaos-smoke: machine
	$(WSCTL) chaos run --self-contained --workspaces 5 --faults 30 --seed 1 --report chaos-report

# Docker engine restarts in a row (the harness stops and starts dockerd: every container
# on this machine stops). Each must converge within 10 s of the engine answering again.
chaos-docker: machine
	$(WSCTL) chaos run --self-contained --docker-restart --only docker-restart --workspaces 3 \
	  --faults 4 --seed 1 --fault-timeout 10 --report chaos-report-docker

lint: venv
	$(VENV)/bin/ruff check controller tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

unit: venv
	bash scripts/pytest.sh tests/unit $(PYTEST_ARGS)

# zsh: the shell-completion tests run it (tests/e2e/test_completion.py).
test: lint machine
	@$(BOOTSTRAP) zsh
	bash scripts/pytest.sh $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
