# The two front-door commands: `make run` and `make test`. Both create .venv and install into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# Pinned so pip takes the CPU build on this machine's disk; a looser spec pulls a CUDA build.
TORCH  := torch==2.13.0
# uv installs the rest in seconds where pip takes minutes. uv does not look at the local torch
# file, so pip installs torch first; uv then sees the pin satisfied and leaves it alone.
UV     := $(BIN)/uv pip install --quiet --python $(BIN)/python

# Nothing may be downloaded from a model hub at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: run test test-slow lint bench bench-quick install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(BIN)/python
	$(PIP) install -q $(TORCH) "uv>=0.9,<1"
	@touch $@

# Stamps make a second install a no-op unless pyproject.toml changed.
$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(UV) -e ".[postgres]" $(TORCH)
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.torch
	$(UV) -e ".[dev]" $(TORCH)
	@touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/driftloop demo

test: install-dev
	$(BIN)/python -m pytest -m "not slow" -p no:cacheprovider

test-slow: install-dev
	$(BIN)/python -m pytest -m slow -p no:cacheprovider

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install-dev
	$(BIN)/python -m bench

bench-quick: install-dev
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) .driftloop
