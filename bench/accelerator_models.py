r"""Train-step time of paper configs at reduced depth on random images: the part of
bench/accelerator.sh that needs no dataset.

  .venv/bin/python bench/accelerator_models.py [--configs=vit_b16,vmoe_b16] [--layers=4]
      [--batch=64] [--steps=10]

Each config is gin/NAME.gin (compute dtype from the file: bfloat16 for the paper configs)
with VitSpec.num_layers=--layers, trained with the trainer's own step function
(harness.runtime.steps.make_train_step) and optax Adam on one device, on one batch of random
images and labels already on the device. Step time is the median of --steps steps after one
compiling step, each waited for with block_until_ready; images/s = batch / median.
"""

import argparse
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable

# Run as a script from anywhere: the project's packages live one folder up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gin
import jax
import jax.numpy as jnp
import optax
from praxis import base_layer

from harness.config import gin_config
from harness.config.train_spec import TrainSpec
from harness.project import REPO_ROOT
from harness.runtime.steps import TrainState, make_train_step
from models import builders
from models.specs import ModelSpec


@dataclasses.dataclass
class RandomImageStep:
    """A config's trainer train step, jitted with the state donated, ready to run on one
    batch of random images and labels already on the device."""

    spec: ModelSpec
    train: TrainSpec
    state: TrainState
    step: Callable
    data: dict[str, jax.Array]


def random_image_step(name: str, batch: int, bindings: list[str]) -> RandomImageStep:
    """gin/NAME.gin with `bindings`, its model initialised and its step (optax Adam) jitted."""
    gin_file = os.path.join(REPO_ROOT, "gin", f"{name}.gin")
    gin_config.parse_gin([gin_file], bindings)
    try:
        spec, train = ModelSpec(), TrainSpec()
    finally:
        gin.clear_config()
    model = base_layer.instantiate(builders.build_model(spec, compute_dtype=train.compute_dtype))
    v = spec.vit
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    images = jax.random.uniform(keys[0], (batch, v.image_size, v.image_size, v.num_channels))
    labels = jax.random.randint(keys[1], (batch,), 0, v.num_classes)
    tx = optax.adam(1e-4)

    @jax.jit
    def init(rng: jax.Array) -> TrainState:
        sample = images[: spec.min_batch]
        params = model.init({base_layer.PARAMS: rng, base_layer.RANDOM: rng}, sample)[
            base_layer.PARAMS
        ]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    step = jax.jit(
        make_train_step(model, tx, optax.constant_schedule(1e-4), train.loss, 0.0, keys[2]),
        donate_argnums=(0,),
    )
    return RandomImageStep(spec, train, init(keys[2]), step, {"image": images, "label": labels})


def time_config(name: str, layers: int, batch: int, steps: int) -> dict[str, float]:
    run = random_image_step(name, batch, [f"VitSpec.num_layers={layers}"])
    state, metrics = run.step(run.state, run.data)  # compiles
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = run.step(state, run.data)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    dtype = run.train.compute_dtype
    return {"step_ms": 1000 * median, "images_per_s": batch / median, "dtype": dtype}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", default="vit_b16,vmoe_b16")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    device = jax.devices()[0]
    print(
        f"{device.platform} {device.device_kind}, one device, jax {jax.__version__}; random "
        f"images, median of {args.steps} steps after a compiling step"
    )
    print()
    print("| config | layers | batch | dtype | step ms | images/s |")
    print("|---|---:|---:|---|---:|---:|")
    for name in args.configs.split(","):
        r = time_config(name, args.layers, args.batch, args.steps)
        print(
            f"| {name} | {args.layers} | {args.batch} | {r['dtype']} | {r['step_ms']:.1f} "
            f"| {r['images_per_s']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
