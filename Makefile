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

# On a CPU other processes keep busy, torch's OpenMP threads spin while they wait for each other and a run takes
# several times longer (README, "Development"). The library only advises (it never changes a process's thread
# count); `make train` follows that advice, cnnlab.device.advised_threads, unless OMP_NUM_THREADS is set already.
ADVISED_THREADS = $(PY) -c "from cnnlab.device import advised_threads; print(advised_threads() or '')"

train: setup
	@threads="$${OMP_NUM_THREADS:-$$($(ADVISED_THREADS))}"; \
	echo "$${threads:+OMP_NUM_THREADS=$$threads }$(VENV)/bin/cnnlab train lenet"; \
	env $${threads:+OMP_NUM_THREADS=$$threads} $(VENV)/bin/cnnlab train lenet

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
