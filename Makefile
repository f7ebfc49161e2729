# Two entry points (see README):
#   make all    set up .venv and run the main job on the built-in data (cpu profile)
#   make test   set up .venv and run the test suite (smoke profile, notebooks under nbval,
#               and notebooks 00 and 04 in JupyterLab under a headless Chromium)
# BEGIN INSTRUCTOR (the student copy leaves these lines out)
#   make student   write the student copy (stubs, exercise and check cells) to $(STUDENT_DIR)
# END INSTRUCTOR
PYTHON   ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
PROFILE  ?= cpu
# The browser test drives Debian's chromium (Playwright never downloads a browser here).
CHROMIUM ?= /usr/bin/chromium
# BEGIN INSTRUCTOR
STUDENT_DIR ?= student-edition
# END INSTRUCTOR

.PHONY: all setup browser test main refresh-notebooks clean-runs

all: setup main

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[lab,test]"
	touch $@

setup: $(VENV)/.installed

# Debian's chromium for tests/test_browser.py, installed when missing (root only: CI runs as root).
browser: $(CHROMIUM)

$(CHROMIUM):
	@if [ "$$(id -u)" != 0 ]; then \
	  echo "no browser at $(CHROMIUM): the browser test needs Debian's chromium; run" \
	       "'sudo apt-get install -y chromium', or pass CHROMIUM=/path/to/chromium to make" >&2; \
	  exit 1; \
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
	@test -x $(CHROMIUM) || { echo "apt-get installed chromium, but not at $(CHROMIUM):" \
	  "pass CHROMIUM=/path/to/chromium to make" >&2; exit 1; }

# The pipeline trains both stages (or resumes them) and scores the test split; the notebook
# series then loads those checkpoints and writes executed copies under runs/$(PROFILE)/notebooks/.
main: setup
	$(BIN)/python -m labkit pipeline --profile $(PROFILE)
	$(BIN)/python -m labkit notebooks --profile $(PROFILE)

# Rewrite the committed notebooks with the outputs of a real run of the current code.
refresh-notebooks: setup
	$(BIN)/python -m labkit notebooks --profile $(PROFILE) --refresh

test: setup browser
	LABKIT_PROFILE=smoke LABKIT_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -q

# BEGIN INSTRUCTOR
# The student edition, from the tracked files (add WITH_SOLUTIONS=1 to keep the solutions).
student: setup
	$(BIN)/python -m labkit student $(STUDENT_DIR) $(if $(WITH_SOLUTIONS),--with-solutions)
.PHONY: student
# END INSTRUCTOR

clean-runs:
	rm -rf runs/
