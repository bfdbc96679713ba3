# The README's two commands: `make demo` and `make test`. Both create .venv and install on first use.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pip takes these two from this machine's disk; a plain range may download several GB
TORCH  := torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= demo_out

.PHONY: install demo test check-clean nbtest pytest bench lab notebooks

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python settings.ini setup.py
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH) -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (cxr-fracture)" >/dev/null
	touch $(STAMP)

install: $(STAMP)

## the main job: the phantom, then the method comparison, on the CPU
demo: install
	$(BIN)/cxr-fracture demo --out $(DEMO_OUT)

## the notebooks must be clean and exported; then the notebook tests; then pytest (its summary line is the count)
test: install check-clean nbtest pytest

check-clean:
	@$(BIN)/nbdev_clean
	@$(BIN)/nbdev_export
	@if [ -n "$$(git status --porcelain --untracked-files=all -- nbs cxr_fracture settings.ini pyproject.toml)" ]; then \
	  echo "nbdev_clean/nbdev_export changed these files: commit clean, exported notebooks:"; \
	  git status --porcelain --untracked-files=all -- nbs cxr_fracture settings.ini pyproject.toml; exit 1; fi
	@echo "notebooks clean and exported"

# Each runs with TMPDIR in a scratch folder of its own, which goes when it ends (pass or fail): the notebooks and tests
# write checkpoints (gigabytes in all) and a machine that runs the suite again and again must not fill its disk.
# `du` prints what the step wrote, so that a growth shows in the log.
SCRATCH = scratch=$$(mktemp -d -t cxr_fracture_test.XXXXXX); trap 'du -sh "$$scratch" | sed "s|^|scratch written: |"; rm -rf "$$scratch"' EXIT; export TMPDIR="$$scratch";

nbtest:
	@$(SCRATCH) $(BIN)/nbdev_test --n_workers 2 --timing

pytest:
	@$(SCRATCH) $(BIN)/python -m pytest tests

## figures that the README and notebooks quote (not run by CI); BENCH_ARGS=--all adds the long ones (science, FracAtlas)
bench: install
	$(BIN)/python tests/benchmarks/run_all.py $(BENCH_ARGS)

## re-execute the notebooks in place (fixed seeds) so that their figures and tables match the code, then nbdev_clean;
## NOTEBOOKS="nbs/06_sharpen.ipynb ..." runs only those
NOTEBOOKS ?= $(wildcard nbs/*.ipynb)
notebooks: install
	$(BIN)/python tools/run_notebooks.py $(NOTEBOOKS)

lab: install
	$(BIN)/jupyter lab nbs
