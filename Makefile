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

# Trains the tiny V-MoE on the embedded Fashion-MNIST; a second `make demo` resumes or, when
# finished, re-evaluates. TensorBoard: .venv/bin/tensorboard --logdir runs
demo: setup
	$(PY) -m harness.inspect --gin_file=gin/vmoe_b16.gin
	$(PY) -m harness.run --gin_file=gin/cpu/vmoe.gin --workdir=runs/demo_vmoe

test: setup
	$(PY) -m pytest tests

test-fast: setup
	$(PY) -m pytest tests -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
