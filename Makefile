# Two entry points (see README):
#   make all    set up .venv and run the main job on the built-in data (cpu profile)
#   make test   set up .venv and run the test suite (smoke profile, notebooks under nbval)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PROFILE ?= cpu

.PHONY: all setup test main refresh-notebooks clean-runs

all: setup main

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

setup: $(VENV)/.installed

# The pipeline trains both stages (or resumes them) and scores the test split; the notebook
# series then loads those checkpoints and writes executed copies under runs/$(PROFILE)/notebooks/.
main: setup
	$(BIN)/python -m labkit pipeline --profile $(PROFILE)
	$(BIN)/python -m labkit.notebook_runner --profile $(PROFILE)

# Rewrite the committed notebooks with the outputs of a real run of the current code.
refresh-notebooks: setup
	$(BIN)/python -m labkit.notebook_runner --profile $(PROFILE) --refresh

test: setup
	LABKIT_PROFILE=smoke $(BIN)/python -m pytest -q

clean-runs:
	rm -rf runs/
