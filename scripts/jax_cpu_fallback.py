"""Runs at interpreter start in a venv set up with `make setup ACCEL=cuda12` (through a .pth
file); picks the CPU backend, with one warning, when no NVIDIA GPU device exists.

Why: jax 0.4.26 registers its CUDA PJRT plugin with fail_quietly=False (xla_bridge.py,
register_plugin), so with jax-cuda12-plugin installed, JAX_PLATFORMS unset and no GPU, the
first JAX call raises "Unable to initialize backend 'cuda': FAILED_PRECONDITION: No visible GPU
devices" instead of falling back to CPU (checked on a GPU-less machine). Setting
JAX_PLATFORMS=cpu before JAX starts skips the plugin. An explicit JAX_PLATFORMS is never
touched. The device files are the ones jax itself looks for (_suggest_missing_backends).
"""

import os
import sys
from collections.abc import MutableMapping

GPU_DEVICE_FILES = ("/dev/nvidia0", "/dev/dxg")  # Linux driver, WSL2


def no_visible_gpu(environ: MutableMapping[str, str] = os.environ) -> bool:
    hidden = environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1")
    return hidden or not any(os.path.exists(path) for path in GPU_DEVICE_FILES)


def apply(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Sets JAX_PLATFORMS=cpu when it is unset and no GPU is visible; True if it did."""
    if "JAX_PLATFORMS" in environ or not no_visible_gpu(environ):
        return False
    environ["JAX_PLATFORMS"] = "cpu"
    print(
        "warning: no NVIDIA GPU visible (no /dev/nvidia0); JAX_PLATFORMS=cpu set so the "
        "installed CUDA plugin does not stop JAX. Set JAX_PLATFORMS yourself to override.",
        file=sys.stderr,
    )
    return True


apply()
