"""What a run directory records about a run: its file names, devices, versions and hparams."""

import dataclasses
import importlib.metadata
import os
import platform
import socket
import time
from typing import Any

from harness.run_dir import names

RESULTS_FILE = names.RESULTS_FILE
SWEEP_FILE = names.SWEEP_FILE
PACKAGES = (
    "jax",
    "jaxlib",
    "praxis",
    "flax",
    "optax",
    "orbax-checkpoint",
    "tensorflow-cpu",
    "tensorflow-datasets",
    "gin-config",
    "clu",
)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def devices() -> dict[str, Any]:
    import jax  # only where the devices are read: run-directory readers need no JAX

    first = jax.devices()[0]
    return {
        "platform": first.platform,
        "kind": first.device_kind,
        "count": jax.device_count(),
        "local_count": jax.local_device_count(),
        "process_count": jax.process_count(),
        "host": socket.gethostname(),
        "cpu_count": os.cpu_count(),
    }


def hparams(experiment: Any) -> dict[str, Any]:
    """Flat scalar hyperparameters for TensorBoard's HParams dashboard."""
    flat: dict[str, Any] = {}
    for section in dataclasses.fields(experiment):
        value = getattr(experiment, section.name)
        for key, item in _flatten(dataclasses.asdict(value), section.name).items():
            if isinstance(item, bool | int | float | str):
                flat[key] = item
            elif item is not None:
                flat[key] = str(item)
    return flat


def _flatten(tree: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}.{key}"))
        else:
            out[f"{prefix}.{key}"] = value
    return out


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
