"""Batches of the synthetic dataset (DataSpec.dataset = 'synthetic'), made on the devices.

Images are uniform in [-1, 1] (the range of the real pipeline's images) and labels uniform over
the classes, independent of the images: there is nothing to learn, only a model to run at full
size without any data on disk.

Why on device: a paper-size batch is 4096 x 224 x 224 x 3 float32, 2.4 GB. Drawing that with
numpy and copying it to the accelerators every step would make the host the bottleneck of the
very benchmarks synthetic data is for. Here one jitted function draws the global batch with
`out_shardings` equal to the trainer's batch shardings. With jax's partitionable threefry each
device draws only its own rows, so nothing crosses the host or the interconnect, and a batch
depends on (seed, step) alone: the same on any mesh and any number of processes, and a
resumed run gets the batches an uninterrupted one would have seen.

The batches are global jax.Arrays in the trainer's layout ('image', 'label', and 'mask' for
eval), so `Trainer.global_batch` passes them through unchanged.
"""

import math
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp

from harness.data.spec import DataSpec

_TRAIN_STREAM, _EVAL_STREAM = 0, 1  # Independent key streams for train and eval batches.


def train_batches(
    config: DataSpec, shardings: dict[str, Any], seed: int, start_step: int = 0
) -> Iterator[dict[str, jax.Array]]:
    """Endless train batches from step `start_step` on; batch i depends on (seed, i) only."""
    draw = _drawer(config, shardings, config.batch_size, seed, _TRAIN_STREAM)
    step = start_step
    while True:
        yield draw(step, config.batch_size)
        step += 1


def eval_batches(config: DataSpec, shardings: dict[str, Any]) -> Iterator[dict[str, jax.Array]]:
    """One pass over the nominal eval split: the last batch is padded and masked like the real
    pipeline's, so sum(mask) is exactly SyntheticSpec.num_eval_examples. The eval images are the
    same at every evaluation (a fixed seed), as a real eval split is."""
    batch_size = config.eval_batch_size or config.batch_size
    draw = _drawer(config, shardings, batch_size, 0, _EVAL_STREAM)
    total = config.synthetic.num_eval_examples
    for index in range(math.ceil(total / batch_size)):
        yield draw(index, total - index * batch_size)


def _drawer(
    config: DataSpec, shardings: dict[str, Any], batch_size: int, seed: int, stream: int
) -> Callable[[int, int], dict[str, jax.Array]]:
    """A function (batch index, number of real examples) -> batch, compiled once.

    Its arguments are Python ints and the key is made inside the jit, so every process of a
    multi-host run passes the same host values and gets its part of one global batch."""
    synthetic = config.synthetic
    image_shape = (batch_size, config.image_size, config.image_size, synthetic.num_channels)

    def draw(index: jax.Array, real: jax.Array) -> dict[str, jax.Array]:
        key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), stream), index)
        image_key, label_key = jax.random.split(key)
        batch = {
            "image": jax.random.uniform(image_key, image_shape, jnp.float32, -1.0, 1.0),
            "label": jax.random.randint(label_key, (batch_size,), 0, synthetic.num_classes),
        }
        if "mask" in shardings:
            batch["mask"] = (jnp.arange(batch_size) < real).astype(jnp.float32)
        return batch

    jitted = jax.jit(draw, out_shardings=shardings)

    def draw_partitioned(index: int, real: int) -> dict[str, jax.Array]:
        # Read at trace time and part of the compile cache key, so set on every call. Without
        # it every device would draw the whole global batch and keep its slice.
        with jax.threefry_partitionable(True):
            return jitted(index, real)

    return draw_partitioned
