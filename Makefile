# The two commands of the README: `make demo` and `make test`. Each sets itself up from a
# machine that has only Python 3.11+, pip and make.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch first and pinned: on a CPU machine 2.13.0 is the CPU build; asking for a range lets pip
# pick a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
# On a busy 2-core machine OpenMP's spinning threads slow CPU generation 10x; let them sleep.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test venv lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench leaderboard

clean:
	rm -rf $(VENV) runs .pytest_cache
