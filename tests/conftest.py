"""Shared test setup: 8 simulated CPU devices, so mesh and sharding code runs on any machine.

XLA reads its flags once, when JAX first initialises its backend, so they must be in the
environment before anything imports jax. pytest imports this file before any test module.
"""

import os

_DEVICE_FLAG = "--xla_force_host_platform_device_count=8"
if _DEVICE_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_DEVICE_FLAG}".strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow is only the input pipeline here.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def pytest_collection_modifyitems(items: list) -> None:
    """Modules with slow tests run first. `make test` spreads whole modules over the cores
    (pytest-xdist, --dist loadfile, so a module's fixtures are built once); starting the longest
    ones first keeps one core from finishing a long module alone at the end. The order within
    a module is kept."""
    slow_modules = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in slow_modules)
