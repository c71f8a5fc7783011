# Two commands do all set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
WSCTL := $(VENV)/bin/wsctl
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: run test bench bench-quick chaos-smoke lint unit docker images venv clean help

help:
	@echo "make run    start the controller with a demo workspace (embedded PostgreSQL, fake LLM)"
	@echo "make test   lint, type-check and run every test (real Docker, real PostgreSQL)"

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

docker:
	bash scripts/ensure-docker.sh

images: venv docker
	$(WSCTL) images build

# The standalone controller with the demo workspace (examples/demo.yaml) wired to
# the project's fake Anthropic-compatible LLM. Ctrl-C stops the controller; the
# workspace container keeps running and is adopted at the next start.
run: images
	$(WSCTL) run --demo

# Controller overhead against raw Docker and docker-compose (benchmarks/README in
# the main README's Performance section). bench-quick checks that the suite works.
bench: venv docker
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) -m benchmarks.bench

bench-quick: venv docker
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) -m benchmarks.bench --quick --out benchmarks/results/quick

# The chaos harness against its own controller: 5 workspaces, 30 faults, seed 1.
chaos-smoke: venv docker
	$(WSCTL) chaos run --self-contained --workspaces 5 --faults 30 --seed 1 --report chaos-report

lint: venv
	$(VENV)/bin/ruff check controller tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

unit: venv
	bash scripts/pytest.sh tests/unit $(PYTEST_ARGS)

test: lint docker
	bash scripts/pytest.sh $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
