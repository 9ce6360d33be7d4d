# fieldlens: two commands on a fresh clone.
#   make demo   sets up .venv and runs the whole edge path on embedded defaults
#   make test   sets up .venv, installs and starts what the tests need, runs lint, types and tests
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH_INDEX ?=
STAMP  := $(VENV)/.installed

.PHONY: setup demo demo-loop test test-fast lint bench system-deps label-studio clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: a bare `torch` requirement makes pip fetch a multi-GB CUDA build. PyPI's
	# torch==2.13.0 for x86_64 Linux is that CUDA build too: TORCH_INDEX=https://download.pytorch.org/whl/cpu
	# takes the CPU build instead (where a local wheel or pip configuration provides it, leave it empty)
	$(BIN)/pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet -e '.[train,demo,label,fleet,dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/fieldlens demo

demo-loop: setup system-deps
	$(BIN)/fieldlens demo --loop

system-deps:
	bash tests/system-deps.sh

label-studio:
	bash tests/label-studio.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy components field_data infra tests

test: setup system-deps label-studio lint
	$(BIN)/pytest

test-fast: setup
	$(BIN)/pytest -m "not slow"

bench: setup system-deps
	$(BIN)/fieldlens bench

clean:
	rm -rf $(VENV) fieldlens-data .pytest_cache .mypy_cache .ruff_cache
