# Two entry points a fresh machine needs: `make quickstart` (main job) and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup quickstart test bench figures docs docs-serve

$(BIN)/cicy-search: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

setup: $(BIN)/cicy-search

quickstart: setup
	$(BIN)/cicy-search study run studies/quickstart.yaml

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python -m bench

# The documentation site (mkdocs.yml, docs/): built into site/ (git-ignored), offline; the reference pages are
# generated from the code by docs/hooks/reference.py during the build.
docs: setup
	$(BIN)/python -m mkdocs build --strict --site-dir site

docs-serve: setup
	$(BIN)/python -m mkdocs serve --dev-addr 127.0.0.1:8000

# The README's figures (docs/figures/*.png): trains the regularisation and bias-variance recipes, resumes the
# quickstart study, plots bench/results/results_table.json; everything is logged to MLflow as usual.
figures: setup
	$(BIN)/python -m cicy_search.experiments.figures
