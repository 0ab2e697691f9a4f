# One-command setup, demo and tests. See README.md.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
LOCK := requirements.lock
STAMP := $(VENV)/.lock-installed

.PHONY: setup demo test test-fast lint reproduce

setup: $(STAMP)
	@bash scripts/install_fashion_mnist.sh

# Rebuilt only when the lock changes, so a second `make setup` is a no-op.
$(STAMP): $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $$(grep '^uv==' $(LOCK))
	$(VENV)/bin/uv pip install --python $(PY) --no-deps -r $(LOCK)
	@touch $@

# The quick version of the paper-claims suite: one seed, a fifth of an epoch per model, on
# the embedded Fashion-MNIST; writes reports/demo.md (under 10 minutes on 2 CPU cores).
demo: setup
	$(PY) -m harness.suite --gin_file=gin/suites/demo.gin

# The full suite: 3 seeds per model; writes reports/paper_claims.md (about an hour on 2 CPU
# cores). Interrupted, the same command resumes where it stopped.
reproduce: setup
	$(PY) -m harness.suite --gin_file=gin/suites/paper_claims.gin

test: setup
	$(PY) -m pytest tests

test-fast: setup
	$(PY) -m pytest tests -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
