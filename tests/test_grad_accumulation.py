"""Gradient accumulation (TrainSpec.microbatches): the same update as the whole batch in one go,
in less temporary memory, with per-micro-batch metrics averaged; bad splits refused in one line."""

import glob
import os
from typing import Any

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from praxis import base_layer

from harness.config import gin_config
from harness.config.experiment import Experiment, validate
from harness.config.train_spec import TrainSpec
from harness.measure.step_temporaries import temp_bytes_of_buffer_assignment
from harness.runtime.grad_accumulation import accumulating, split_microbatches
from harness.runtime.steps import TrainState, make_train_step
from harness.train.resume import first_difference
from models import builders, specs

BATCH = 32


@pytest.fixture(autouse=True)
def _clear_gin():
    yield
    gin.clear_config()


def _dense_vit() -> base_layer.BaseLayer:
    spec = specs.ModelSpec(
        family="vit",
        vit=specs.VitSpec(
            image_size=16,
            patch_size=4,
            num_classes=10,
            model_dims=32,
            num_layers=2,
            mlp_dims=64,
            num_heads=2,
        ),
    )
    return base_layer.instantiate(builders.build_model(spec))


def _batch() -> dict[str, jax.Array]:
    image_key, label_key = jax.random.split(jax.random.PRNGKey(0))
    return {
        "image": jax.random.normal(image_key, (BATCH, 16, 16, 3)),
        "label": jax.random.randint(label_key, (BATCH,), 0, 10),
    }


def _state(model: base_layer.BaseLayer, tx: optax.GradientTransformation) -> TrainState:
    rngs = {base_layer.PARAMS: jax.random.PRNGKey(1), base_layer.RANDOM: jax.random.PRNGKey(2)}
    params = model.init(rngs, _batch()["image"][:1])[base_layer.PARAMS]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def _step(model: base_layer.BaseLayer, tx: optax.GradientTransformation, microbatches: int):
    schedule = optax.constant_schedule(1e-2)
    rng = jax.random.PRNGKey(3)
    return jax.jit(make_train_step(model, tx, schedule, "softmax", 0.0, rng, microbatches))


def test_split_interleaves_rows_so_each_device_block_feeds_every_microbatch():
    rows = jnp.arange(12.0)[:, None] * jnp.ones((1, 3))
    parts = split_microbatches(rows, 4)
    assert parts.shape == (4, 3, 3)
    np.testing.assert_array_equal(parts[1, :, 0], [1, 5, 9])  # rows j, j + m, j + 2m
    # Two devices holding rows 0-5 and 6-11: each micro-batch takes rows from both halves.
    assert all((part[:, 0] < 6).any() and (part[:, 0] >= 6).any() for part in parts)


def _delta(new: TrainState, old: TrainState) -> Any:
    return jax.tree_util.tree_map(jnp.subtract, new.params, old.params)


@pytest.mark.slow
def test_four_microbatches_make_the_update_of_the_whole_batch():
    # Plain SGD with rate 1, so the update is minus the gradient itself. (Adam's first step,
    # g / |g|, would turn float noise in gradients near zero into updates of full size.)
    model, tx = _dense_vit(), optax.sgd(1.0)
    state = _state(model, tx)
    whole, whole_metrics = _step(model, tx, 1)(state, _batch())
    accumulated, metrics = _step(model, tx, 4)(state, _batch())
    for name in ("train/loss", "train/cross_entropy", "train/accuracy", "train/grad_norm"):
        np.testing.assert_allclose(metrics[name], whole_metrics[name], rtol=1e-5, err_msg=name)
    scale = float(whole_metrics["train/grad_norm"])
    assert scale > 0.1  # a real gradient, not two zeros that agree
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * scale),
        _delta(accumulated, state),
        _delta(whole, state),
    )


def _temp_bytes(microbatches: int, dump_dir: str) -> int:
    """Temporary bytes of the compiled step: memory_analysis() where the backend reports it;
    jaxlib 0.4.26's CPU executables report zeros, so then XLA's buffer-assignment dump, read
    as harness.inspect's memory plan reads it."""
    model, tx = _dense_vit(), optax.sgd(1e-2)
    state = jax.eval_shape(lambda: _state(model, tx))
    batch = jax.eval_shape(_batch)
    lowered = _step(model, tx, microbatches).lower(state, batch)
    options = {"xla_dump_to": dump_dir, "xla_dump_hlo_module_re": ".*train_step.*"}
    compiled = lowered.compile(options)
    analysis = compiled.memory_analysis()
    if analysis is not None and analysis.temp_size_in_bytes > 0:
        return analysis.temp_size_in_bytes
    (dump,) = glob.glob(os.path.join(dump_dir, "*train_step*buffer-assignment.txt"))
    with open(dump) as text:
        return temp_bytes_of_buffer_assignment(text.read())


@pytest.mark.slow
def test_microbatches_lower_the_compiled_step_temporary_memory(tmp_path):
    whole, quarter = _temp_bytes(1, str(tmp_path / "1")), _temp_bytes(4, str(tmp_path / "4"))
    # The activations of 8 images instead of 32 live at once; gradients and the scan's
    # accumulator are the same size in both, so the saving is less than 4x.
    assert quarter < 0.6 * whole, (quarter, whole)


def test_metrics_are_averaged_over_microbatches_and_maxima_kept():
    """A toy loss whose metrics depend on the whole micro-batch (as MoE aux losses do): the
    accumulated value is the mean of the per-micro-batch values, not the whole batch's."""

    def loss_and_grad(params: Any, batch: dict[str, jax.Array], rng: jax.Array):
        x = batch["x"]
        loss = jnp.mean((x * params) ** 2)
        metrics = {"spread": jnp.var(x), "peak": jnp.max(x), "first_two": x[:2]}
        return (loss, metrics), 2 * params * jnp.mean(x**2)

    x = jnp.arange(8.0)
    (loss, metrics), grads = accumulating(loss_and_grad, 2, max_metrics=("peak",))(
        jnp.float32(3.0), {"x": x}, jax.random.PRNGKey(0)
    )
    halves = [x[0::2], x[1::2]]
    np.testing.assert_allclose(metrics["spread"], np.mean([np.var(h) for h in halves]))
    assert float(metrics["spread"]) != pytest.approx(float(jnp.var(x)))
    assert float(metrics["peak"]) == 7.0
    # A vector metric (an MoE layer's per-expert load) is averaged element-wise.
    np.testing.assert_allclose(metrics["first_two"], (halves[0][:2] + halves[1][:2]) / 2)
    np.testing.assert_allclose(loss, jnp.mean((x * 3.0) ** 2), rtol=1e-6)
    np.testing.assert_allclose(grads, 6.0 * jnp.mean(x**2), rtol=1e-6)


def _experiment(gin_file: str, *params: str) -> Experiment:
    gin_config.parse_gin([gin_file], list(params))
    return Experiment.from_gin()


@pytest.mark.parametrize(
    "gin_file, microbatches, multiple",
    [
        ("gin/cpu/vit.gin", 3, 24),  # batch 128 over 8 devices: 8 x 3 micro-batches
        ("gin/cpu/vmoe.gin", 4, 256),  # 8 devices x 4 micro-batches x routing groups of 8
    ],
)
def test_batch_that_does_not_split_into_microbatches_is_refused(gin_file, microbatches, multiple):
    experiment = _experiment(gin_file, f"TrainSpec.microbatches={microbatches}")
    with pytest.raises(ValueError, match=f"use a multiple of {multiple} ") as error:
        validate(experiment, 8)
    message = str(error.value)
    assert "DataSpec.batch_size=128" in message and "\n" not in message
    assert f"TrainSpec.microbatches={microbatches}" in message


def test_batch_that_splits_into_microbatches_validates():
    experiment = _experiment("gin/cpu/vmoe.gin", "TrainSpec.microbatches=2")
    assert validate(experiment, 8) == (8, 1, 1)


def test_a_run_may_resume_with_another_number_of_microbatches():
    # A run pre-empted on one machine may resume on one with less memory per device.
    stored = _experiment("gin/cpu/vit.gin")
    gin.clear_config()
    resumed = _experiment("gin/cpu/vit.gin", "TrainSpec.microbatches=4")
    assert first_difference(stored, resumed) is None
    gin.clear_config()
    reseeded = _experiment("gin/cpu/vit.gin", "TrainSpec.microbatches=4", "TrainSpec.seed=1")
    assert first_difference(stored, reseeded) == ("TrainSpec.seed", 0, 1)


def test_microbatches_must_be_positive():
    with pytest.raises(ValueError, match=r"TrainSpec\.microbatches=0 must be >= 1"):
        TrainSpec(microbatches=0)
