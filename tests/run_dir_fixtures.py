"""Hand-made run directories for the report's tests: the smallest results.json the report
shows (every field harness/run_dir/results_schema.py requires), without training a run."""

import copy
import json
import os
from typing import Any

import gin

MINIMAL_RESULTS: dict[str, Any] = {
    "run": {
        "family": "vit",
        "gin_files": ["gin/cpu/vit.gin"],
        "gin_params": [],
        "versions": {"jax": "0"},
        "devices": {
            "count": 1,
            "process_count": 1,
            "kind": "cpu",
            "platform": "cpu",
            "host": "h",
        },
    },
    "eval": {"eval/top1": 0.5},
    "model": {"params_total": 10, "params_active": 10, "gflops_per_image": 0.01},
    "train": {"wall_seconds": 1.0},
}


def minimal_results() -> dict[str, Any]:
    return copy.deepcopy(MINIMAL_RESULTS)


def minimal_run(directory: Any, results: dict[str, Any] | None = None) -> str:
    """A run directory at `directory` holding only results.json (MINIMAL_RESULTS by default)."""
    os.makedirs(directory)
    with open(os.path.join(directory, "results.json"), "w") as f:
        json.dump(minimal_results() if results is None else results, f)
    return str(directory)


# A tiny ViT trained for two steps: the run the damaged-run-directory tests break.
TINY_VIT_BINDINGS = (
    "VitSpec.num_layers=1",
    "TrainSpec.num_epochs=None",
    "TrainSpec.num_steps=2",
    "DataSpec.eval_split='test[:256]'",
)


def train_tiny_vit(workdir: str, *bindings: str) -> str:
    """Trains gin/cpu/vit.gin with TINY_VIT_BINDINGS (then `bindings`) into `workdir`."""
    from harness.train import launch  # JAX and praxis: only for the tests that train

    try:
        launch.train(["gin/cpu/vit.gin"], [*TINY_VIT_BINDINGS, *bindings], workdir)
    finally:
        gin.clear_config()
    return workdir
