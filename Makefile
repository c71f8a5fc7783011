# Two commands do all set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
WSCTL := $(VENV)/bin/wsctl
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: run test lint unit integration docker images venv clean help

help:
	@echo "make run    build the agent image and show what the example workspace projects to"
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

# Until the standalone loop lands (issue 3) `make run` builds the image and
# validates and renders the example workspace with a placeholder key.
run: images
	$(WSCTL) validate -f examples/
	WSCTL_SECRET_MINIMAX_API_KEY=$${WSCTL_SECRET_MINIMAX_API_KEY:-demo-placeholder-key} \
		$(WSCTL) render -f examples/workspace.yaml

lint: venv
	$(VENV)/bin/ruff check controller tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

unit: venv
	bash scripts/pytest.sh tests/unit $(PYTEST_ARGS)

test: lint docker
	bash scripts/pytest.sh $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
