# One-command setup, demo and tests. See README.md.
# Python 3.11 or 3.12, whichever the machine has (scripts/find_python.sh); PYTHON=... overrides.
PYTHON ?= $(shell bash scripts/find_python.sh 2>/dev/null)
VENV := .venv
PY := $(VENV)/bin/python
LOCK := requirements.lock
STAMP := $(VENV)/.lock-installed

.PHONY: setup demo test test-fast lint reproduce

# `make setup ACCEL=cuda12` (CUDA 12 GPUs) or `ACCEL=tpu` (on a TPU VM only) adds the
# accelerator's pinned wheels to the CPU lock's venv (scripts/setup_accel.sh says which and
# why). Without ACCEL, setup is CPU only, as before.
ACCEL ?=
ifneq ($(filter-out cuda12 tpu,$(ACCEL)),)
$(error ACCEL=$(ACCEL) is not known; use ACCEL=cuda12 or ACCEL=tpu, or leave it out for CPU)
endif

setup: $(STAMP) $(if $(ACCEL),$(VENV)/.$(ACCEL)-installed)
	@bash scripts/install_fashion_mnist.sh

$(VENV)/.cuda12-installed: $(STAMP) requirements-cuda12.lock scripts/setup_accel.sh \
		scripts/jax_cpu_fallback.py
	bash scripts/setup_accel.sh cuda12 $(VENV)
	@touch $@

$(VENV)/.tpu-installed: $(STAMP) scripts/setup_accel.sh
	bash scripts/setup_accel.sh tpu $(VENV)
	@touch $@

# Rebuilt only when the lock changes, so a second `make setup` is a no-op.
$(STAMP): $(LOCK)
	@test -x $(PY) || test -n "$(PYTHON)" || bash scripts/find_python.sh >/dev/null
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $$(grep '^uv==' $(LOCK))
	$(VENV)/bin/uv pip install --python $(PY) --no-deps -r $(LOCK)
	@touch $@

# The quick version of the paper-claims suite: one seed, a fifth of an epoch per model, on
# the embedded Fashion-MNIST; writes reports/demo.md (about 20 minutes on 2 CPU cores).
demo: setup
	$(PY) -m harness.suite --gin_file=gin/suites/demo.gin

# The full suite: 3 seeds per model; writes reports/paper_claims.md (about 1.5 hours on 2 CPU
# cores: its 35 runs train for about an hour, plus start-ups, sweeps, timing and the report).
# Interrupted, the same command resumes where it stopped.
reproduce: setup
	$(PY) -m harness.suite --gin_file=gin/suites/paper_claims.gin

# Whole test modules spread over TEST_WORKERS processes (pytest-xdist), so each module's shared
# fixtures are built once. Each worker simulates its own 8 CPU devices (tests/conftest.py).
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=30

test: setup
	$(PYTEST) tests

test-fast: setup
	$(PYTEST) tests -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
