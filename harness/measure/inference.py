"""Inference throughput and latency, with the one definition every report uses.

Method (what `InferenceTiming.describe_method()` prints next to each figure):
- The input batch is random float32 images of shape (batch, *image_shape), built once per batch
  size from numpy with a fixed seed and put on the device before anything is timed, so host
  generation and transfer are never in the numbers. Every compared model gets the same batch.
- `warmup` untimed calls first (compilation, autotuning, allocator and cache warm-up), each
  waited on with `jax.block_until_ready` so no queued work leaks into the timed calls.
- Then `repeats` calls, each timed on its own: clock() before `forward(x)`, clock() after
  `jax.block_until_ready(forward(x))`. JAX dispatches asynchronously, so without the block the
  clock would measure dispatch only, not the device work.
- Python's garbage collector is paused during the timed calls (as `timeit` does), so a
  collection of unrelated objects does not land inside one model's call.
- ms per batch: p50 and p90 by `numpy.percentile(..., method="linear")` and the mean over the
  timed calls; images/s = batch / p50 (the median, so one slow outlier does not move it).
- Several models: `time_models` times them in one process with identical settings and inputs,
  interleaving their timed calls round by round, so slow drift in the machine (clock boost,
  thermal limits, other load) is spread over all models instead of landing on one.
- Devices: the ones holding the input and the forward's output (platform, device kind, count).
  Peak memory comes from `peak_memory_bytes` where the backend reports it; CPU does not.
"""

import dataclasses
import gc
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import jax
import numpy as np
from praxis import base_layer

from harness.runtime.steps import apply_model

PERCENTILE_METHOD = "linear"
Forward = Callable[[jax.Array], Any]


@dataclasses.dataclass(frozen=True)
class InferenceTiming:
    """Inference timing of one model at one batch size (times in milliseconds per batch)."""

    batch_size: int
    p50_ms: float
    p90_ms: float
    mean_ms: float
    images_per_s: float  # batch_size / p50
    repeats: int
    warmup: int
    platform: str
    device_kind: str
    num_devices: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe_method(self) -> str:
        """One line saying exactly how these numbers were measured, for every report."""
        return (
            f"batch {self.batch_size} on {self.num_devices} x {self.device_kind} "
            f"({self.platform}): {self.repeats} calls timed one by one after {self.warmup} "
            "untimed warm-up calls, each timed with time.perf_counter() around forward(x) plus "
            "jax.block_until_ready on its output, input pre-built on the device, GC paused; "
            f"p50/p90 = numpy.percentile (method='{PERCENTILE_METHOD}'), mean over the same "
            "calls, images/s = batch / p50"
        )


def jit_forward(model: base_layer.BaseLayer, params: Any) -> Callable[[jax.Array], jax.Array]:
    """Jitted inference forward (logits only) through harness.steps.apply_model with rng=None,
    so every compared model runs in the same inference mode.

    The function is jitted once here; params go in as an argument rather than being closed
    over, so they are not baked into the program as constants (slow to compile and a copy of
    every weight). Calls with the same input shape and dtype reuse the compiled program.
    """

    def logits_fn(variables: Any, images: jax.Array) -> jax.Array:
        return apply_model(model, variables, images, None)[0]

    compiled = jax.jit(logits_fn)

    def forward(images: jax.Array) -> jax.Array:
        return compiled(params, images)

    return forward


def peak_memory_bytes(device: jax.Device | None = None) -> int | None:
    """Peak bytes in use on `device` (default: the first device) since the process started,
    where the backend reports it (GPU, TPU); None where it does not (CPU), never a guess.

    The peak is process-wide, not per model: to compare models, measure each in its own
    process or read it after the first model only."""
    device = device if device is not None else jax.devices()[0]
    try:
        stats = device.memory_stats()
    except (NotImplementedError, RuntimeError):
        return None
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return int(stats["peak_bytes_in_use"])


def time_inference(
    forward: Forward,
    image_shape: tuple[int, int, int],
    batch_sizes: Sequence[int],
    warmup: int = 3,
    repeats: int = 20,
    seed: int = 0,
    clock: Callable[[], float] = time.perf_counter,
    input_sharding: jax.sharding.Sharding | jax.Device | None = None,
) -> list[InferenceTiming]:
    """Times `forward` at each batch size under the method in this module's docstring.

    Args:
      forward: Maps a (batch, *image_shape) float32 array to logits, e.g. `jit_forward(...)`.
      image_shape: (height, width, channels) of one image.
      batch_sizes: Batch sizes to time, each with its own warm-up.
      warmup: Untimed calls per batch size before the timed ones (>= 0).
      repeats: Timed calls per batch size (>= 1).
      seed: Seed of the random input batches.
      clock: Seconds as a float; tests inject a fake clock, reports keep time.perf_counter.
      input_sharding: Where the input batch lives (a Sharding or Device, as for
        jax.device_put); None = JAX's default device.

    Returns:
      One InferenceTiming per batch size, in the order given.
    """
    return time_models(
        {"model": forward},
        image_shape,
        batch_sizes,
        warmup=warmup,
        repeats=repeats,
        seed=seed,
        clock=clock,
        input_sharding=input_sharding,
    )["model"]


def time_models(
    named_forwards: dict[str, Forward],
    image_shape: tuple[int, int, int],
    batch_sizes: Sequence[int],
    warmup: int = 3,
    repeats: int = 20,
    seed: int = 0,
    clock: Callable[[], float] = time.perf_counter,
    input_sharding: jax.sharding.Sharding | jax.Device | None = None,
) -> dict[str, list[InferenceTiming]]:
    """Times several models in this one process under identical settings, for comparisons.

    For each batch size: one input batch shared by all models; every model's `warmup` calls
    (model by model); then `repeats` rounds, each timing every model once in the given order.
    Interleaving the rounds spreads slow drift of the machine over all models alike. Arguments
    are as for `time_inference`.

    Returns:
      {name: [InferenceTiming per batch size, in the order given]}, names in the given order.
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got warmup={warmup}, {repeats=}")
    if not named_forwards:
        raise ValueError("time_models needs at least one model to time")
    bad = [b for b in batch_sizes if int(b) != b or b < 1]
    if bad or not batch_sizes:
        raise ValueError(f"batch_sizes must be positive integers, got {list(batch_sizes)}")

    results: dict[str, list[InferenceTiming]] = {name: [] for name in named_forwards}
    for batch_size in batch_sizes:
        images = _input_batch(int(batch_size), image_shape, seed, input_sharding)
        outputs = {}
        for name, forward in named_forwards.items():
            for _ in range(warmup):
                outputs[name] = jax.block_until_ready(forward(images))
        durations: dict[str, list[float]] = {name: [] for name in named_forwards}
        with _gc_paused():
            for _ in range(repeats):
                for name, forward in named_forwards.items():
                    seconds, outputs[name] = _timed_call(forward, images, clock)
                    durations[name].append(seconds)
        for name in named_forwards:
            results[name].append(
                _summarise(int(batch_size), durations[name], warmup, images, outputs[name])
            )
    return results


def _input_batch(
    batch_size: int,
    image_shape: tuple[int, int, int],
    seed: int,
    placement: jax.sharding.Sharding | jax.Device | None,
) -> jax.Array:
    # numpy rather than jax.random: no extra program to compile per shape, and the same values
    # on every backend. The batch is waited on so its transfer is never in a timed call.
    rng = np.random.default_rng([seed, batch_size])
    host = rng.standard_normal((batch_size, *image_shape), dtype=np.float32)
    return jax.block_until_ready(jax.device_put(host, placement))


def _timed_call(forward: Forward, images: jax.Array, clock: Callable[[], float]):
    start = clock()
    output = jax.block_until_ready(forward(images))
    return clock() - start, output


@contextmanager
def _gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _summarise(
    batch_size: int, seconds: list[float], warmup: int, images: jax.Array, output: Any
) -> InferenceTiming:
    p50, p90 = np.percentile(np.asarray(seconds), [50, 90], method=PERCENTILE_METHOD)
    devices = _devices(images, output)
    return InferenceTiming(
        batch_size=batch_size,
        p50_ms=float(p50) * 1e3,
        p90_ms=float(p90) * 1e3,
        mean_ms=float(np.mean(seconds)) * 1e3,
        # A zero median only comes from a coarse or fake clock; inf says so without crashing.
        images_per_s=batch_size / float(p50) if p50 > 0 else float("inf"),
        repeats=len(seconds),
        warmup=warmup,
        platform=_joined(d.platform for d in devices),
        device_kind=_joined(d.device_kind for d in devices),
        num_devices=len(devices),
    )


def _devices(images: jax.Array, output: Any) -> list[jax.Device]:
    """Devices the measured work touched: those of the input and of every output array."""
    arrays = [images, *(x for x in jax.tree_util.tree_leaves(output) if isinstance(x, jax.Array))]
    devices = set().union(*(a.sharding.device_set for a in arrays))
    return sorted(devices, key=lambda d: d.id)


def _joined(values: Any) -> str:
    # A mixed set of devices is unusual but should show, not be hidden behind the first one.
    return ",".join(sorted(set(values)))
