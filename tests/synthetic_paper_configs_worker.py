"""Trains every paper config (harness.project.PAPER_CONFIGS) for one step on synthetic data, at
reduced depth and width, each into WORKDIR/NAME, in this one process. Run by
tests/test_synthetic_data.py in a subprocess, as `python tests/synthetic_paper_configs_worker.py
WORKDIR [NAME ...]` (NAMEs: only those configs), with XLA_FLAGS giving 8 simulated CPU devices;
prints one line per config and exits 1 if any failed.

What is reduced is only what makes a paper model big: depth, width, heads, image size and
batch. Each config keeps its family, routing (experts, k, capacity, router, groups, the kind of
placement), ViT-22B switches, remat, dtype, loss and optimizer.
"""

import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import project
from harness.config import gin_config
from harness.train import launch
from models import specs

# Every expert count of the paper configs (4, 32, 128) divides by 4.
SPARSE_MESH, DENSE_MESH = (2, 4, 1), (8, 1, 1)
REDUCED = [
    "VitSpec.num_layers=2",
    "VitSpec.model_dims=16",
    "VitSpec.mlp_dims=32",
    "VitSpec.num_heads=2",
    "VitSpec.image_size=16",
    "VitSpec.patch_size=8",
    # 8 devices x one routing group of 8 images (V-MoE's group size) each.
    "DataSpec.batch_size=64",
    "DataSpec.eval_batch_size=64",
    "SyntheticSpec.num_eval_examples=64",
    "TrainSpec.num_epochs=None",
    "TrainSpec.num_steps=1",
]


# One sparse config also accumulates gradients, so micro-batches meet expert parallelism (the
# all-to-all inside the scan) in the real trainer: 2 micro-batches of one routing group each.
ACCUMULATES = "vmoe_s32"
ACCUMULATION = ["TrainSpec.microbatches=2", "DataSpec.batch_size=128"]


def reduced_bindings(name: str) -> list[str]:
    """REDUCED, the mesh, and an MoE placement of the config's kind that fits 2 blocks."""
    gin_config.parse_gin([f"gin/{name}.gin"], [])
    model = specs.ModelSpec()
    mesh = SPARSE_MESH if model.is_sparse else DENSE_MESH
    axes = zip(specs.MESH_AXES, mesh, strict=True)
    bindings = [*REDUCED, *(f"MeshSpec.{axis}={size}" for axis, size in axes)]
    kind = model.moe.placement.partition("_")[0]
    if model.family == "vmoe" and kind in ("last", "tail"):
        bindings.append(f"MoeSpec.placement='{kind}_1'")  # last_5 / tail_6 of 2 blocks
    return bindings + (ACCUMULATION if name == ACCUMULATES else [])


def main() -> None:
    root, names = sys.argv[1], sys.argv[2:] or project.PAPER_CONFIGS
    failed = []
    for name in names:
        try:
            gin_files = [f"gin/{name}.gin", "gin/data/synthetic.gin"]
            launch.train(gin_files, reduced_bindings(name), os.path.join(root, name))
            print(f"OK {name}", flush=True)
        except Exception:  # Report every config, not just the first that fails.
            failed.append(name)
            print(f"FAILED {name}\n{traceback.format_exc()}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
