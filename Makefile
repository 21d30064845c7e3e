# The two set-up commands of the README:  `make` (the whole pipeline, default profile)  and  `make test`.
# Both create the virtual environment .venv on first use (torch pinned to 2.13.0) and reuse it afterwards.
VENV := .venv
BIN := $(abspath $(VENV))/bin
CORES ?= 2
export PATH := $(BIN):$(PATH)

.PHONY: all pipeline dvc dvc-adopt test test-all clean-results

all: pipeline

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

pipeline: $(VENV)/.installed  ## every stage on the profile in params.yaml, ending in report/index.html
	snakemake --profile profiles/local --cores $(CORES)

dvc: $(VENV)/.installed  ## the same stages through DVC (one at a time)
	dvc repro

dvc-adopt: $(VENV)/.installed  ## after `make`: record Snakemake's outputs in dvc.lock, so `dvc status` is clean
	dvc commit -f -q

test: $(VENV)/.installed  ## the test suite (tiny generated data, CPU), without the slow integration tests
	python -m pytest -m "not slow"

test-all: $(VENV)/.installed  ## every test, the slow integration tests (marked `slow`) included: what CI runs
	python -m pytest

clean-results:  ## remove generated outputs (keeps data/raw downloads and checkpoints)
	rm -rf results/runs results/tuning results/tracking results/tables results/analysis figures report logs
