# make demo — see wxkf answer a WeChat customer on the built-in simulator, nothing configured.
# make test — ruff, mypy --strict and the whole test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck pytest browser screenshots bench docs clean

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

# The console's browser tests drive Debian's Chromium (with a CJK font, or Chinese renders as boxes);
# Playwright never downloads a browser. Installed here when missing (root; otherwise it says how).
browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! dpkg -s fonts-wqy-microhei >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei; \
	  else \
	    echo "控制台的浏览器测试需要 / the console's browser tests need: sudo apt-get install chromium fonts-wqy-microhei" >&2; \
	    exit 1; \
	  fi; \
	fi

test: lint typecheck browser pytest

# The console's screenshots in docs/console/, taken by its browser tests.
screenshots: $(STAMP) browser
	CONSOLE_SCREENSHOT_DIR=docs/console $(BIN)/pytest tests/browser -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# docs/troubleshooting.md is generated from the error catalog (src/wxkf/wecom/catalog.py).
docs: $(STAMP)
	$(BIN)/python -m wxkf.ops.troubleshooting > docs/troubleshooting.md

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
