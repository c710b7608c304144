# Quick start: `make demo` and `make test`; both set up .venv/ first (idempotent, cached).
VENV := .venv
PY := $(VENV)/bin/python
DEMOS := det seg pretrain

.PHONY: setup demo test lint format bench

setup:
	@bash tools/setup_env.sh

demo: setup
	@rm -rf output/demo/steps
	$(PY) tools/demo_backbone.py
	@for part in $(DEMOS); do \
	  if [ -f tools/demo_$$part.sh ]; then bash tools/demo_$$part.sh || exit 1; fi; \
	done
	@$(PY) tools/demo_report.py summary

test: setup
	$(PY) -m pytest -n 2 tests

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup
	$(PY) tools/benchmark.py
