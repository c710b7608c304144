# Quick start: `make demo` and `make test`; both set up .venv/ first (idempotent, cached).
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint format bench

setup:
	@bash tools/setup_env.sh

demo: setup
	@rm -rf output/demo/steps
	$(PY) tools/demo_backbone.py
	@bash tools/demo_seg.sh
	@bash tools/demo_det_and_chain.sh
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
