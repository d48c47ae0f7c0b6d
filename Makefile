# Set-up is automatic: each target creates (once) and reuses the virtual environment .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= dev,cluster,loggers,lora,wandb

.PHONY: demo test test-fast lint bench analyze clean-outputs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

## The main job on the embedded default: pretrain on digits 0-4, the 72-job demo sweep on
## digits 5-9, and its analysis (outputs/multirun/demo/analysis/report.md).
demo: $(STAMP)
	$(BIN)/python scripts/pretrain.py
	$(BIN)/python scripts/train.py -m experiment=demo

## Lint and every test, the slow ones (multirun sweeps in subprocesses) too. CI runs this.
## Serially (-n 0): the sweeps' own worker processes and timed waits get the whole machine.
test: $(STAMP)
	$(BIN)/ruff check src scripts tests
	$(BIN)/python -m pytest -q -m "" -n 0

## The fast tests only (what a bare `pytest` runs: on every core, pytest-xdist).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src scripts tests

bench: $(STAMP)
	$(BIN)/python scripts/bench_frozen.py
	$(BIN)/python scripts/bench_step.py
	$(BIN)/python scripts/bench_analysis.py

clean-outputs:
	rm -rf outputs
