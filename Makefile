# Two entry points a fresh machine needs: `make quickstart` (main job) and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup quickstart test bench

$(BIN)/cicy-search: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

setup: $(BIN)/cicy-search

quickstart: setup
	$(BIN)/cicy-search study run studies/quickstart.yaml

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python -m bench
