"""Inference timing: call counts, statistics on a fake clock, blocking, and jit without re-tracing.

Nothing here asserts how fast anything runs; durations come from a fake clock.
"""

import dataclasses
import random

import jax
import jax.numpy as jnp
import pytest
from praxis import base_layer

from harness.measure import inference
from models import builders, specs

IMAGE_SHAPE = (4, 4, 1)
TINY_VIT = specs.ModelSpec(
    family="vit",
    vit=specs.VitSpec(
        image_size=16,
        patch_size=4,
        num_channels=1,
        num_classes=5,
        model_dims=32,
        num_layers=2,
        mlp_dims=64,
        num_heads=4,
    ),
)


class FakeClock:
    """A clock that only moves when a fake forward advances it, by amounts the test picks."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


class FakeForward:
    """Counts calls per batch size and advances the clock by the next scripted duration."""

    def __init__(self, clock: FakeClock, durations, log=None, name="fake") -> None:
        self.clock = clock
        self.durations = list(durations)
        self.calls: dict[int, int] = {}
        self.inputs: list[jax.Array] = []
        self.log = log if log is not None else []
        self.name = name

    def __call__(self, images: jax.Array) -> jax.Array:
        batch = images.shape[0]
        self.calls[batch] = self.calls.get(batch, 0) + 1
        self.inputs.append(images)
        self.log.append((self.name, batch))
        self.clock.now += self.durations.pop(0)
        return images  # a real jax array, so block_until_ready has something to wait on


def test_warmup_and_repeats_are_honoured_per_batch_size():
    clock = FakeClock()
    warmup, repeats, batch_sizes = 2, 5, (1, 3, 8)
    forward = FakeForward(clock, [0.5] * (warmup + repeats) * len(batch_sizes))
    results = inference.time_inference(
        forward, IMAGE_SHAPE, batch_sizes, warmup=warmup, repeats=repeats, clock=clock
    )
    assert forward.calls == {b: warmup + repeats for b in batch_sizes}
    assert clock.reads == 2 * repeats * len(batch_sizes)  # warm-up calls are not timed
    assert [r.batch_size for r in results] == list(batch_sizes)
    assert all(r.warmup == warmup and r.repeats == repeats for r in results)
    assert all(x.shape == (x.shape[0], *IMAGE_SHAPE) for x in forward.inputs)
    assert all(x.dtype == jnp.float32 for x in forward.inputs)


def test_input_batch_is_built_once_per_batch_size():
    clock = FakeClock()
    forward = FakeForward(clock, [0.25] * 8)
    inference.time_inference(forward, IMAGE_SHAPE, [2, 3], warmup=1, repeats=3, clock=clock)
    assert all(x is forward.inputs[0] for x in forward.inputs[:4])
    assert all(x is forward.inputs[4] for x in forward.inputs[4:])


def test_statistics_on_a_fake_clock_are_exact():
    clock = FakeClock()
    # Eleven timed calls of k/8 s (exact in binary) in shuffled order, after warm-up calls so
    # long that counting any of them would show.
    timed = [k * 0.125 for k in range(1, 12)]
    random.Random(0).shuffle(timed)
    forward = FakeForward(clock, [100.0, 100.0, *timed])
    (result,) = inference.time_inference(
        forward, IMAGE_SHAPE, [6], warmup=2, repeats=11, clock=clock
    )
    assert result.p50_ms == 750.0  # sorted k = 1..11, median k = 6
    assert result.p90_ms == pytest.approx(1250.0)  # linear: index 0.9 * 10 = 9, k = 10
    assert result.mean_ms == pytest.approx(750.0)
    assert result.p50_ms <= result.p90_ms
    assert result.images_per_s == 6 / 0.75
    assert result.images_per_s == result.batch_size / (result.p50_ms / 1000)


def test_p50_never_exceeds_p90():
    clock = FakeClock()
    rng = random.Random(1)
    forward = FakeForward(clock, [rng.uniform(0.001, 0.1) for _ in range(3 * 7)])
    for result in inference.time_inference(
        forward, IMAGE_SHAPE, [1, 2, 4], warmup=0, repeats=7, clock=clock
    ):
        assert result.p50_ms <= result.p90_ms


def test_block_until_ready_wraps_every_call_inside_the_timed_region(monkeypatch):
    events = []
    clock = FakeClock()
    forward = FakeForward(clock, [0.25] * 3)
    real_block = jax.block_until_ready

    def spy_block(x):
        events.append(("block", x))
        return real_block(x)

    def logging_clock():
        events.append(("clock", None))
        return clock()

    def logging_forward(images):
        events.append(("forward", None))
        return forward(images)

    monkeypatch.setattr(jax, "block_until_ready", spy_block)
    inference.time_inference(
        logging_forward, IMAGE_SHAPE, [2], warmup=1, repeats=2, clock=logging_clock
    )
    kinds = [kind for kind, _ in events]
    # The input batch is waited on first, then the warm-up call, then each timed call is
    # clock, forward, block on the forward's output, clock.
    assert kinds == ["block", "forward", "block"] + ["clock", "forward", "block", "clock"] * 2
    outputs = [x for kind, x in events if kind == "block"][1:]
    assert all(isinstance(x, jax.Array) and x is forward.inputs[0] for x in outputs)


def test_result_describes_devices_and_method():
    clock = FakeClock()
    forward = FakeForward(clock, [0.25] * 2)
    (result,) = inference.time_inference(
        forward, IMAGE_SHAPE, [2], warmup=1, repeats=1, clock=clock
    )
    device = jax.devices()[0]
    assert result.platform == device.platform == "cpu"
    assert result.device_kind == device.device_kind
    assert result.num_devices == 1
    assert set(result.as_dict()) == {
        "batch_size",
        "p50_ms",
        "p90_ms",
        "mean_ms",
        "images_per_s",
        "repeats",
        "warmup",
        "platform",
        "device_kind",
        "num_devices",
    }
    assert result.as_dict()["p50_ms"] == 250.0
    method = result.describe_method()
    assert "\n" not in method
    for part in ("1 calls timed", "1 untimed warm-up", "block_until_ready", "'linear'", "p50"):
        assert part in method
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.p50_ms = 0.0


def test_time_models_interleaves_models_on_the_same_input():
    clock = FakeClock()
    log = []
    a = FakeForward(clock, [0.25] * 10, log, "a")
    b = FakeForward(clock, [0.5] * 10, log, "b")
    results = inference.time_models(
        {"a": a, "b": b}, IMAGE_SHAPE, [1, 2], warmup=2, repeats=3, clock=clock
    )
    per_batch = [("a", 1)] * 2 + [("b", 1)] * 2 + [("a", 1), ("b", 1)] * 3
    assert log == per_batch + [(name, 2) for name, _ in per_batch]
    assert all(x is a.inputs[0] for x in a.inputs[:5] + b.inputs[:5])
    assert list(results) == ["a", "b"]
    assert [r.p50_ms for r in results["a"]] == [250.0, 250.0]
    assert [r.p50_ms for r in results["b"]] == [500.0, 500.0]


def test_rejects_meaningless_settings():
    with pytest.raises(ValueError, match="repeats"):
        inference.time_inference(lambda x: x, IMAGE_SHAPE, [1], repeats=0)
    with pytest.raises(ValueError, match="batch_sizes"):
        inference.time_inference(lambda x: x, IMAGE_SHAPE, [0])


def test_jit_forward_returns_logits_and_traces_once(monkeypatch):
    model = base_layer.instantiate(builders.build_model(TINY_VIT))
    images = jnp.ones((2, 16, 16, 1), jnp.float32)
    rngs = {base_layer.PARAMS: jax.random.PRNGKey(0), base_layer.RANDOM: jax.random.PRNGKey(1)}
    params = model.init(rngs, images)[base_layer.PARAMS]

    traces = []
    real_apply = inference.apply_model

    def counting_apply(*args, **kwargs):
        traces.append(args[3])  # runs only while tracing; records the rng (None = inference)
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(inference, "apply_model", counting_apply)
    forward = inference.jit_forward(model, params)
    results = inference.time_inference(forward, (16, 16, 1), [2], warmup=2, repeats=3)
    logits = forward(images)
    assert logits.shape == (2, 5)
    assert traces == [None]  # one trace for six calls, in inference mode
    assert results[0].repeats == 3


def test_peak_memory_bytes_is_none_or_an_int_on_cpu():
    for device in (None, jax.devices()[-1]):
        peak = inference.peak_memory_bytes(device)
        assert peak is None or (isinstance(peak, int) and peak >= 0)
