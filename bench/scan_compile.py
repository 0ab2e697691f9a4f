r"""Compile time of a paper config's full-depth train step, with VitSpec.scan_layers off and on.

  .venv/bin/python bench/scan_compile.py --gin_file=gin/vmoe_b16.gin [--scan=off,on]
      [--images=8] [--gin_param=...]

For each setting: the trainer's train step (harness/runtime/steps.py: loss, aux losses, routing
stats, the gin file's AdamW, remat policy and compute dtype) on one CPU device, its state and
batch abstract (ShapeDtypeStructs, so nothing at full size is allocated), then
`jax.jit(train_step).lower(state, batch)` and `.compile()`, each timed once with
time.perf_counter. One line of JSON per setting on stdout. The expert axis is 1 (one device),
the batch `--images` images (one routing group of 8 for the V-MoE paper configs).
"""

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

# Run as a script from anywhere: the project's packages live one folder up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import optax
from praxis import base_layer

from harness.config import gin_config
from harness.config.train_spec import OptimizerSpec, TrainSpec
from harness.runtime.optimizer import make_optimizer
from harness.runtime.steps import TrainState, make_train_step
from models import builders
from models.specs import ModelSpec


def compile_seconds(gin_file: str, bindings: Sequence[str], images: int) -> dict[str, Any]:
    """Lower and compile times of the train step `gin_file` + `bindings` describe."""
    gin_config.parse_gin([gin_file], list(bindings))
    spec, train, opt = ModelSpec(), TrainSpec(), OptimizerSpec()
    model = base_layer.instantiate(builders.build_model(spec, compute_dtype=train.compute_dtype))
    v = spec.vit
    image = (v.image_size, v.image_size, v.num_channels)
    tx = make_optimizer(opt, 1000)

    def init(rng: jax.Array) -> TrainState:
        init_images = jnp.zeros((spec.min_batch, *image), jnp.float32)
        variables = model.init({base_layer.PARAMS: rng, base_layer.RANDOM: rng}, init_images)
        params = variables[base_layer.PARAMS]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    state = jax.eval_shape(init, jax.random.PRNGKey(0))
    batch = {
        "image": jax.ShapeDtypeStruct((images, *image), jnp.float32),
        "label": jax.ShapeDtypeStruct((images,), jnp.int32),
    }
    step = make_train_step(
        model, tx, optax.constant_schedule(1e-3), train.loss, 0.0, jax.random.PRNGKey(1)
    )
    start = time.perf_counter()
    lowered = jax.jit(step, donate_argnums=(0,)).lower(state, batch)
    lowered_s = time.perf_counter() - start
    lowered.compile()
    compile_s = time.perf_counter() - start - lowered_s
    return {
        "gin_file": gin_file,
        "scan_layers": v.scan_layers,
        "num_layers": v.num_layers,
        "placement": spec.moe.placement if spec.family == "vmoe" else None,
        "remat": v.remat,
        "compute_dtype": train.compute_dtype,
        "images": images,
        "params": sum(x.size for x in jax.tree_util.tree_leaves(state.params)),
        "lower_s": round(lowered_s, 1),
        "compile_s": round(compile_s, 1),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gin_file", required=True)
    parser.add_argument("--scan", default="off,on", help="comma-separated: off, on")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--gin_param", action="append", default=[])
    args = parser.parse_args(argv)
    settings = args.scan.split(",")
    for setting in settings:
        if setting not in ("off", "on"):
            parser.error(f"--scan={args.scan!r}: each entry must be 'off' or 'on'")
    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, jax {jax.__version__}, "
        f"{jax.devices()[0].platform}",
        flush=True,
    )
    for setting in settings:
        scan = f"VitSpec.scan_layers={setting == 'on'}"
        print(json.dumps(compile_seconds(args.gin_file, [*args.gin_param, scan], args.images)),
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
