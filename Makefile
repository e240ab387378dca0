# OneMember: `make run` starts the product on SQLite with demo data; `make test` runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "OneMember needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/onemember db upgrade
	$(BIN)/onemember demo --if-empty
	@echo ""
	@echo "  OneMember is starting on http://127.0.0.1:8000  (API docs: /docs)"
	@echo "  Log in as HQ:            admin / onemember-admin"
	@echo "  Log in as store manager: sh01_mgr / onemember-store"
	@echo ""
	$(BIN)/onemember serve

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/checkout.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
