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
