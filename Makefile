# Quickstart targets: `make train` (set-up + the main job) and `make test` (set-up + the test suite).
VENV ?= .venv
PY := $(VENV)/bin/python

# Point the library at the shared read-only copy of Fashion-MNIST when one sits beside the checkout
# (the library itself only knows --data-dir, $CNNLAB_DATA and its download cache).
ifeq ($(CNNLAB_DATA),)
  ifneq ($(wildcard ../shared/data/fashion-mnist),)
    export CNNLAB_DATA := $(abspath ../shared/data/fashion-mnist)
  endif
endif

.PHONY: setup train test lint
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

train: setup
	$(VENV)/bin/cnnlab train lenet

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
