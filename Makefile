# make demo — see wxkf answer a WeChat customer on the built-in simulator, nothing configured.
# make test — ruff, mypy --strict and the whole test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck pytest bench docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/wxkf demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# docs/troubleshooting.md is generated from the error catalog (src/wxkf/wecom/catalog.py).
docs: $(STAMP)
	$(BIN)/python -m wxkf.ops.troubleshooting > docs/troubleshooting.md

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
