"""Fine-tuning (TrainSpec.init_from): the pretrained body is copied, the head is new and zero,
the position grid is resampled, misfits are one line, and the SGD-momentum recipe is built
from its spec and gin files."""

import dataclasses
import math
import os
import shutil

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from praxis import base_layer

from harness.checkpoint_formats import posemb, tree_mapping
from harness.checkpoint_formats.detect import FORMATS
from harness.checkpoint_formats.importer import import_params
from harness.config import gin_config
from harness.config.experiment import Experiment
from harness.config.experiment_file import write_experiment
from harness.config.train_spec import CHECKPOINT_FORMATS, MeshSpec, OptimizerSpec, TrainSpec
from harness.data.spec import DataSpec
from harness.errors import UsageError
from harness.run_dir import events
from harness.runtime import init_from, optimizer
from harness.runtime.checkpointing import Checkpointer
from harness.runtime.steps import TrainState
from harness.train import launch
from models import builders, specs
from tests import checkpoint_writers as writers
from tests import reference_vit

TINY = specs.VitSpec(
    image_size=8,
    patch_size=4,
    num_channels=1,
    num_classes=12,
    model_dims=16,
    num_layers=2,
    mlp_dims=32,
    num_heads=2,
)
PRETRAINED_STEP = 7


def _abstract_params(vit: specs.VitSpec) -> dict:
    model = base_layer.instantiate(builders.build_model(specs.ModelSpec(family="vit", vit=vit)))
    images = jnp.zeros((2, vit.image_size, vit.image_size, vit.num_channels))
    return jax.eval_shape(model.init, _rngs(0), images)[base_layer.PARAMS]


def _rngs(seed: int) -> dict:
    return {base_layer.PARAMS: jax.random.PRNGKey(seed), base_layer.RANDOM: jax.random.PRNGKey(1)}


def _save_run(run_dir: str, vit: specs.VitSpec) -> dict:
    """A run directory as harness.run leaves it (experiment.json and an orbax checkpoint of
    random weights); returns the saved params as flat host arrays."""
    model_spec = specs.ModelSpec(family="vit", vit=vit)
    model = base_layer.instantiate(builders.build_model(model_spec))
    images = jnp.zeros((2, vit.image_size, vit.image_size, vit.num_channels))
    params = model.init(_rngs(3), images)[base_layer.PARAMS]
    state = TrainState(
        step=jnp.asarray(PRETRAINED_STEP), params=params, opt_state={"count": jnp.asarray(1)}
    )
    checkpointer = Checkpointer(run_dir, keep=1)
    checkpointer.save(PRETRAINED_STEP, state)
    checkpointer.close()
    experiment = Experiment(
        model=model_spec,
        train=TrainSpec(),
        mesh=MeshSpec(),
        optimizer=OptimizerSpec(),
        data=DataSpec(dataset="fashion_mnist"),
    )
    write_experiment(run_dir, experiment)
    return tree_mapping.flat_paths(jax.device_get(params))


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory) -> tuple[str, dict]:
    run_dir = str(tmp_path_factory.mktemp("pretrained"))
    return run_dir, _save_run(run_dir, TINY)


def _fine_tune_params(run_dir: str, vit: specs.VitSpec, lines: list[str] | None = None):
    log = lines.append if lines is not None else (lambda _: None)
    return init_from.load_pretrained(run_dir, _abstract_params(vit), model="tiny.gin", log=log)


# --- The starting point: body copied, head new and zero, position grid resampled. ---


def test_the_head_is_zero_for_the_new_class_count_and_the_body_is_the_pretrained_one(
    pretrained_run,
):
    run_dir, saved = pretrained_run
    pretrained = _fine_tune_params(run_dir, dataclasses.replace(TINY, num_classes=10))
    flat = tree_mapping.flat_paths(pretrained.params)
    assert flat.keys() == saved.keys()
    assert flat["head/linear/w"].shape == (16, 10) and flat["head/bias/b"].shape == (10,)
    assert not flat["head/linear/w"].any() and not flat["head/bias/b"].any()
    body = [k for k in saved if not k.startswith("head/")]
    assert len(body) == len(saved) - 2
    for name in body:
        np.testing.assert_array_equal(flat[name], saved[name], err_msg=name)
    record = pretrained.record
    assert record["format"] == "run" and record["step"] == PRETRAINED_STEP
    assert record["checkpoint"] == os.path.abspath(run_dir)
    assert record["upstream"]["num_classes"] == 12
    assert record["head"]["checkpoint"] == {"head/bias/b": [12], "head/linear/w": [16, 12]}
    assert record["head"]["model"] == {"head/bias/b": [10], "head/linear/w": [16, 10]}
    assert record["position_embedding"] == "copied unchanged"


def test_a_released_npz_gives_its_body_a_zero_head_and_a_resampled_grid(tmp_path):
    weights = reference_vit.random_weights(
        0,
        patch_size=4,
        channels=1,
        width=16,
        depth=2,
        mlp_dims=32,
        heads=2,
        classes=12,
        position_rows=5,  # a class token and a 2x2 grid
        class_token=True,
        pre_logits=False,
        moe_blocks=(),
        experts=4,
    )
    path = str(tmp_path / "released.npz")
    writers.write_npz(path, writers.vit_npz_names(weights, pre_linen=False))
    # Read at its own size and class count, the checkpoint is the reference.
    same, _ = import_params(path, _abstract_params(TINY), model="tiny.gin", log=print)
    target = dataclasses.replace(TINY, num_classes=10, image_size=12)
    pretrained = init_from.load_pretrained(
        path, _abstract_params(target), model="tiny.gin", log=print
    )
    assert pretrained.record["format"] == "vit_npz" and pretrained.record["step"] is None
    flat, reference = tree_mapping.flat_paths(pretrained.params), tree_mapping.flat_paths(same)
    assert not flat["head/linear/w"].any() and flat["head/linear/w"].shape == (16, 10)
    assert flat["position_embedding"].shape == (1, 10, 16)
    for name in reference.keys() - {"head/linear/w", "head/bias/b", "position_embedding"}:
        np.testing.assert_array_equal(flat[name], reference[name], err_msg=name)


def test_a_higher_resolution_resamples_the_grid_bilinearly_and_keeps_the_class_token(
    pretrained_run,
):
    run_dir, saved = pretrained_run
    lines: list[str] = []
    # 8 px -> 12 px with 4-px patches: the 2x2 grid becomes 3x3.
    pretrained = _fine_tune_params(run_dir, dataclasses.replace(TINY, image_size=12), lines)
    old, new = saved["position_embedding"], pretrained.params["position_embedding"]
    assert new.shape == (1, 1 + 9, 16)
    np.testing.assert_array_equal(new[0, 0], old[0, 0])  # the class token's row
    old_grid, new_grid = old[0, 1:].reshape(2, 2, 16), new[0, 1:].reshape(3, 3, 16)
    # Bilinear with corners aligned: corners are kept, the centre is the mean of all four.
    for (i, j), (oi, oj) in {
        (0, 0): (0, 0),
        (0, 2): (0, 1),
        (2, 0): (1, 0),
        (2, 2): (1, 1),
    }.items():
        np.testing.assert_allclose(new_grid[i, j], old_grid[oi, oj], rtol=1e-6)
    np.testing.assert_allclose(new_grid[1, 1], old_grid.mean(axis=(0, 1)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(new_grid[0, 1], old_grid[0].mean(axis=0), rtol=1e-5, atol=1e-7)
    assert lines == [pretrained.record["position_embedding"]]
    assert "2x2 to a 3x3" in lines[0]


def test_a_pooled_models_ramp_stays_a_ramp_and_an_unchanged_grid_is_the_identity():
    # Global-average-pooled models have no class token: every row is a grid position.
    side, new_side = 3, 5
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    table = (1.5 * rows - 0.5 * cols).astype(np.float32).reshape(1, side * side, 1)
    same = posemb.resample_position_embedding(table, table.shape, class_slots=0, log=print)
    np.testing.assert_array_equal(same, table)
    resized = posemb.resample_position_embedding(table, (1, 25, 1), class_slots=0, log=print)
    new_rows, new_cols = np.meshgrid(np.arange(new_side), np.arange(new_side), indexing="ij")
    scale = (side - 1) / (new_side - 1)
    expected = scale * (1.5 * new_rows - 0.5 * new_cols)
    np.testing.assert_allclose(resized.reshape(new_side, new_side), expected, atol=1e-5)


@pytest.mark.parametrize(
    "change, named",
    [
        (
            {"mlp_dims": 48},
            "encoder/x_layers_0/ff_layer/ffn_layer1/bias/b: checkpoint (32,) vs model (48,)",
        ),
        ({"pre_logits": True}, "not in the checkpoint (pre_logits_layer/bias/b"),
        ({"num_layers": 1}, "no place in the model (encoder/x_layers_1/"),
    ],
    ids=["shape", "missing", "extra"],
)
def test_any_other_misfit_is_one_line_naming_the_parameter(pretrained_run, change, named):
    run_dir, _ = pretrained_run
    with pytest.raises(UsageError) as caught:
        _fine_tune_params(run_dir, dataclasses.replace(TINY, num_classes=10, **change))
    message = str(caught.value)
    assert named in message and "\n" not in message


def test_harness_run_stops_on_a_misfit_before_writing_anything(pretrained_run, tmp_path):
    run_dir, _ = pretrained_run  # 16 wide; gin/cpu/vit.gin's model is 64 wide
    workdir = tmp_path / "finetuned"
    with pytest.raises(UsageError, match=r"checkpoint \(16,\) vs model \(64,\)") as caught:
        try:
            launch.train(["gin/cpu/vit.gin"], [f"TrainSpec.init_from='{run_dir}'"], str(workdir))
        finally:
            gin.clear_config()
    assert "\n" not in str(caught.value)
    assert not workdir.exists()


def test_a_run_directory_without_a_checkpoint_is_one_line(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(UsageError, match="has no"):
        _fine_tune_params(str(tmp_path), TINY)


# --- The fine-tuning recipe. ---


def test_sgd_momentum_is_built_from_the_spec_with_clipping_and_no_weight_decay():
    spec = OptimizerSpec(
        name="sgd_momentum",
        momentum=0.9,
        learning_rate=0.1,
        end_learning_rate=0.1,  # constant after warm-up, so the updates are easy to follow
        warmup_steps=0,
        weight_decay=0.0,
        grad_clip_norm=1.0,
    )
    tx = optimizer.make_optimizer(spec, total_steps=10)
    params = {"w": jnp.array([100.0, -100.0])}  # large: weight decay would show
    grads = {"w": jnp.array([3.0, 4.0])}  # norm 5, clipped to norm 1: [0.6, 0.8]
    state = tx.init(params)
    first, state = tx.update(grads, state, params)
    second, _ = tx.update(grads, state, params)
    np.testing.assert_allclose(first["w"], [-0.06, -0.08], rtol=1e-6)
    # Heavy-ball momentum: the trace is g + 0.9 * previous trace = 1.9 g.
    np.testing.assert_allclose(second["w"], [-0.114, -0.152], rtol=1e-6)


def test_adam_stays_the_default():
    spec = OptimizerSpec(warmup_steps=0, end_learning_rate=1e-3, weight_decay=0.0)
    assert spec.name == "adam"
    tx = optimizer.make_optimizer(spec, total_steps=10)
    params, grads = {"w": jnp.array([1.0])}, {"w": jnp.array([5.0])}
    updates, _ = tx.update(grads, tx.init(params), params)
    reference, _ = optax.adam(1e-3).update(grads, optax.adam(1e-3).init(params), params)
    np.testing.assert_allclose(updates["w"], reference["w"], rtol=1e-6)


@pytest.mark.parametrize(
    "make, named",
    [
        (lambda: OptimizerSpec(name="rmsprop"), "OptimizerSpec.name='rmsprop' is unknown"),
        (lambda: OptimizerSpec(momentum=1.0), "OptimizerSpec.momentum=1.0 must be in [0, 1)"),
        (
            lambda: OptimizerSpec(name="sgd_momentum", weight_decay=0.1),
            "OptimizerSpec.weight_decay=0.1 is not applied",
        ),
        (lambda: TrainSpec(init_from=""), "TrainSpec.init_from='' names no checkpoint"),
        (
            lambda: TrainSpec(init_from="x.npz", init_from_format="onnx"),
            "TrainSpec.init_from_format='onnx' is unknown",
        ),
        (lambda: TrainSpec(init_from_format="run"), "TrainSpec.init_from is not"),
    ],
)
def test_bad_fine_tuning_settings_are_one_line(make, named):
    with pytest.raises(ValueError) as caught:
        make()
    # gin appends "In call to configurable ..." lines; the command reports the first line.
    assert named in str(caught.value).splitlines()[0]


def test_the_specs_formats_are_the_importers():
    assert tuple(CHECKPOINT_FORMATS) == FORMATS


@pytest.mark.parametrize(
    "model_gin, transfer_gin, dataset, size, classes, steps",
    [
        ("gin/vit_b16.gin", "gin/transfer/imagenet2012_384.gin", "imagenet2012", 384, 1000, 20000),
        ("gin/vmoe_b16.gin", "gin/transfer/cifar10_224.gin", "cifar10", 224, 10, 10000),
        ("gin/vit_l16.gin", "gin/transfer/cifar100_224.gin", "cifar100", 224, 100, 10000),
        ("gin/cpu/vit.gin", "gin/cpu/finetune.gin", "fashion_mnist", 35, 10, 200),
    ],
)
def test_transfer_gin_files_compose_with_a_model_gin(
    model_gin, transfer_gin, dataset, size, classes, steps
):
    binding = "TrainSpec.init_from='runs/upstream'"
    try:
        gin_config.parse_gin([model_gin, transfer_gin], [binding])
        experiment = Experiment.from_gin()
    finally:
        gin.clear_config()
    assert experiment.train.init_from == "runs/upstream"
    assert (experiment.train.num_steps, experiment.train.num_epochs) == (steps, None)
    assert experiment.data.dataset == dataset
    assert experiment.data.image_size == experiment.model.vit.image_size == size
    assert experiment.model.vit.num_classes == classes
    opt = experiment.optimizer
    assert (opt.name, opt.momentum, opt.weight_decay, opt.grad_clip_norm, opt.decay) == (
        "sgd_momentum",
        0.9,
        0.0,
        1.0,
        "cosine",
    )
    if transfer_gin.startswith("gin/transfer/"):
        assert (experiment.data.batch_size, opt.warmup_steps, opt.learning_rate) == (512, 500, 0.03)


# --- End to end, on the embedded Fashion-MNIST. ---

FINE_TUNE = [
    "TrainSpec.num_steps=10",
    "TrainSpec.log_every_steps=1",
    "TrainSpec.checkpoint_every_steps=10",
    "DataSpec.batch_size=64",
    "DataSpec.eval_split='test[:256]'",
    "OptimizerSpec.learning_rate=0.05",
    "OptimizerSpec.warmup_steps=2",
    # The head alone changes shape: same resolution as the pretrained run.
    "DataSpec.image_size=28",
    "VitSpec.image_size=28",
]


@pytest.mark.slow
def test_fine_tuning_a_saved_run_trains_and_resuming_does_not_reload_it(tmp_path):
    # The pretrained run: gin/cpu/vit.gin's model with a 12-way head (so only the head's
    # shape differs from the 10-class fine-tuning), saved as harness.run saves one.
    try:
        gin_config.parse_gin(["gin/cpu/vit.gin"], ["VitSpec.num_classes=12"])
        upstream = Experiment.from_gin().model.vit
    finally:
        gin.clear_config()
    pretrained_dir = str(tmp_path / "pretrained")
    _save_run(pretrained_dir, upstream)
    workdir = str(tmp_path / "finetuned")
    gins = ["gin/cpu/vit.gin", "gin/cpu/finetune.gin"]
    try:
        payload = launch.train(
            gins, [*FINE_TUNE, f"TrainSpec.init_from='{pretrained_dir}'"], workdir
        )
    finally:
        gin.clear_config()
    record = payload["run"]["init_from"]
    assert record["checkpoint"] == pretrained_dir and record["format"] == "run"
    assert record["head"]["model"]["head/linear/w"] == [64, 10]
    losses = [loss for _, loss in events.read_scalars(workdir)["train/loss"]]
    assert len(losses) == 10
    # A zero head predicts the uniform distribution: the first loss is exactly ln(10).
    assert losses[0] == pytest.approx(math.log(10), rel=1e-5)
    assert np.mean(losses[-3:]) < losses[0] - 0.05

    # Resuming continues from the run's own checkpoint: the pretrained run is not read again.
    shutil.move(pretrained_dir, str(tmp_path / "moved"))
    longer = [*FINE_TUNE, "TrainSpec.num_steps=12", f"TrainSpec.init_from='{pretrained_dir}'"]
    try:
        resumed = launch.train(gins, longer, workdir)
    finally:
        gin.clear_config()
    assert resumed["train"]["resumed_from_step"] == 10
    assert resumed["run"]["init_from"] == record
