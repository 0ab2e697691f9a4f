"""harness.checkpoint_formats: each external format, written as its reference repo writes
it, imports into our tree and gives the logits the reference code base computes; misfits fail
in one line."""

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from praxis import base_layer

from harness.checkpoint_formats import (
    detect,
    flax_vit,
    npz_reading,
    posemb,
    tree_mapping,
    vmoe_reference,
)
from harness.checkpoint_formats.importer import import_params
from harness.errors import UsageError
from models import builders, specs
from models.stats import STATS
from tests import checkpoint_writers as writers
from tests import reference_vit

TINY = specs.VitSpec(
    image_size=8,
    patch_size=4,
    num_channels=3,
    num_classes=5,
    model_dims=16,
    num_layers=2,
    mlp_dims=32,
    num_heads=2,
)
# capacity_factor E/k: every expert can take every token, so nothing is dropped and the
# reference's capacity-free top-k sum is exact.
TINY_MOE = specs.MoeSpec(num_experts=4, num_selected_experts=2, capacity_factor=2.0)
MODEL = "gin/tiny.gin"


def _spec(family: str = "vit", **vit: object) -> specs.ModelSpec:
    return specs.ModelSpec(family=family, vit=dataclasses.replace(TINY, **vit), moe=TINY_MOE)


def _images(spec: specs.ModelSpec) -> np.ndarray:
    size, channels = spec.vit.image_size, spec.vit.num_channels
    return np.random.default_rng(0).standard_normal((2, size, size, channels)).astype(np.float32)


@functools.cache
def _model(spec: specs.ModelSpec) -> tuple[base_layer.BaseLayer, dict]:
    model = base_layer.instantiate(builders.build_model(spec))
    rngs = {base_layer.PARAMS: jax.random.PRNGKey(0), base_layer.RANDOM: jax.random.PRNGKey(1)}
    abstract = jax.eval_shape(model.init, rngs, jnp.asarray(_images(spec)))
    return model, abstract[base_layer.PARAMS]


def _our_logits(spec: specs.ModelSpec, params: dict) -> np.ndarray:
    model, _ = _model(spec)
    context = base_layer.JaxContext.HParams(do_eval=True)
    with base_layer.JaxContext.new_context(hparams=context):
        logits, _ = model.apply(
            {base_layer.PARAMS: params},
            jnp.asarray(_images(spec)),
            mutable=[base_layer.AUX_LOSS, STATS],
        )
    return np.asarray(logits)


def _weights(spec: specs.ModelSpec, *, class_token: bool, position_rows: int, seed: int = 0):
    v = spec.vit
    return reference_vit.random_weights(
        seed,
        patch_size=v.patch_size,
        channels=v.num_channels,
        width=v.model_dims,
        depth=v.num_layers,
        mlp_dims=v.mlp_dims,
        heads=v.num_heads,
        classes=v.num_classes,
        position_rows=position_rows,
        class_token=class_token,
        pre_logits=v.pre_logits,
        moe_blocks=tuple(spec.moe_layers),
        experts=spec.moe.num_experts,
    )


def _import(path: str, spec: specs.ModelSpec, **kwargs: object) -> tuple[dict, str]:
    return import_params(path, _model(spec)[1], model=MODEL, **kwargs)


def _assert_logits_match(spec, params, weights, **reference_kwargs) -> None:
    expected = reference_vit.logits(weights, _images(spec), **reference_kwargs)
    np.testing.assert_allclose(_our_logits(spec, params), expected, rtol=2e-4, atol=2e-4)


# --- Each format gives the reference's logits. ---


@pytest.mark.parametrize("pre_linen", [True, False], ids=["original", "augreg"])
def test_vision_transformer_npz_gives_the_reference_logits(tmp_path, pre_linen):
    spec = _spec(pre_logits=True)
    weights = _weights(spec, class_token=True, position_rows=5)
    path = str(tmp_path / "vit.npz")
    writers.write_npz(path, writers.vit_npz_names(weights, pre_linen=pre_linen))
    params, chosen = _import(path, spec)
    assert chosen == detect.VIT_NPZ
    _assert_logits_match(spec, params, weights)


def test_bfloat16_npz_is_read_back_from_numpys_void_records(tmp_path):
    spec = _spec()
    weights = _weights(spec, class_token=True, position_rows=5)
    path = str(tmp_path / "vit_bf16.npz")
    writers.write_npz(path, writers.vit_npz_names(weights, pre_linen=False), bfloat16=True)
    with np.load(path) as archive:
        assert archive["cls"].dtype == np.dtype("V2"), "numpy stores bfloat16 as raw records"
    rounded = jax.tree_util.tree_map(
        lambda x: x.astype(ml_dtypes.bfloat16).astype(np.float32), weights
    )
    params, _ = _import(path, spec)
    _assert_logits_match(spec, params, rounded)


def test_big_vision_npz_scanned_gap_model_with_train_state_gives_the_reference_logits(tmp_path):
    spec = _spec(pooling="gap", pre_logits=True)
    weights = _weights(spec, class_token=False, position_rows=4)
    flat = writers.big_vision_names(weights, scan=True, prefix="params/")
    flat["opt/mu/head/kernel"] = np.zeros((16, 5), np.float32)  # optimizer state: not loaded
    path = str(tmp_path / "bv.npz")
    writers.write_npz(path, flat)
    params, chosen = _import(path, spec)
    assert chosen == detect.BIG_VISION_NPZ
    _assert_logits_match(spec, params, weights)


def test_big_vision_npz_token_model_adds_posemb_before_the_class_token(tmp_path):
    spec = _spec()
    weights = _weights(spec, class_token=True, position_rows=4)  # no class slot
    path = str(tmp_path / "bv_tok.npz")
    writers.write_npz(path, writers.big_vision_names(weights, scan=False))
    params, chosen = _import(path, spec)
    assert chosen == detect.BIG_VISION_NPZ
    _assert_logits_match(spec, params, weights, posemb_before_class_token=True)


@pytest.mark.parametrize("versioned", [True, False], ids=["v20220622", "before-versions"])
def test_vmoe_reference_checkpoint_gives_the_reference_logits(tmp_path, versioned):
    spec = _spec("vmoe", pre_logits=True)
    weights = _weights(spec, class_token=True, position_rows=5)
    state = {f"params/{k}": v for k, v in writers.vmoe_names(weights).items()}
    state["step"] = np.asarray(1000, np.int32)
    state["opt_state/mu/head/kernel"] = np.zeros((16, 5), np.float32)  # not read
    prefix = str(tmp_path / "ckpt_1000")
    writers.write_vmoe(prefix, state, num_shards=3, versioned=versioned)
    params, chosen = _import(prefix + ".index", spec)
    assert chosen == detect.VMOE
    _assert_logits_match(spec, params, weights, k=TINY_MOE.num_selected_experts)


@pytest.mark.parametrize("mesh_shape", [(2, 4, 1), (1, 2, 4)])
def test_imported_experts_are_host_arrays_for_any_mesh_dividing_them(tmp_path, mesh_shape):
    spec = _spec("vmoe")
    weights = _weights(spec, class_token=True, position_rows=5)
    prefix = str(tmp_path / "ckpt")
    writers.write_vmoe(prefix, writers.vmoe_names(weights), num_shards=3)
    params, _ = _import(prefix, spec)
    wi = params["encoder"]["x_layers_1"]["ff_layer"]["moe"]["wi"]  # [E=4, D, H]
    assert isinstance(wi, np.ndarray)
    mesh = Mesh(np.asarray(jax.devices()[:8]).reshape(mesh_shape), specs.MESH_AXES)
    placed = jax.device_put(wi, NamedSharding(mesh, PartitionSpec("expert", None, "model")))
    assert placed.sharding.shard_shape(wi.shape)[0] == 4 // mesh_shape[1]
    np.testing.assert_array_equal(np.asarray(placed), wi)


def test_vmoe_reader_reassembles_arrays_split_over_shards(tmp_path):
    value = np.arange(4 * 3 * 5, dtype=np.float32).reshape(4, 3, 5)
    prefix = str(tmp_path / "ckpt")
    writers.write_vmoe(prefix, {"a/b": value, "c": np.ones(2, np.float32)}, num_shards=2)
    arrays = vmoe_reference.read_arrays(prefix)
    np.testing.assert_array_equal(arrays["a/b"], value)
    np.testing.assert_array_equal(arrays["c"], np.ones(2))


def test_our_run_directory_gives_back_the_trained_params(tmp_path):
    from harness.runtime.checkpointing import Checkpointer  # the trainer's own writer
    from harness.runtime.steps import TrainState

    spec = _spec("vmoe")
    model, _ = _model(spec)
    rngs = {base_layer.PARAMS: jax.random.PRNGKey(3), base_layer.RANDOM: jax.random.PRNGKey(4)}
    trained = model.init(rngs, jnp.asarray(_images(spec)))[base_layer.PARAMS]
    state = TrainState(
        step=jnp.asarray(7), params=trained, opt_state={"mu": trained, "count": jnp.asarray(7)}
    )
    checkpointer = Checkpointer(str(tmp_path), keep=2)
    checkpointer.save(7, state)
    checkpointer.close()

    params, chosen = _import(str(tmp_path), spec)
    assert chosen == detect.RUN
    leaves = jax.tree_util.tree_leaves(params)
    assert all(isinstance(leaf, np.ndarray) for leaf in leaves), "host arrays, caller places"
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, jax.device_get(trained))


# --- Detection. ---


def test_detection_by_path_and_the_override(tmp_path):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "ckpt.index").write_bytes(b"")
    assert detect.path_format(str(tmp_path / "run")) == detect.RUN
    assert detect.path_format(str(tmp_path / "ckpt")) == detect.VMOE
    assert detect.path_format(str(tmp_path / "ckpt.index")) == detect.VMOE
    assert detect.path_format("x.npz") == "npz"
    assert detect.npz_format({"Transformer/posembed_input/pos_embedding"}) == detect.VIT_NPZ
    assert detect.npz_format({"params/pos_embedding"}) == detect.BIG_VISION_NPZ
    assert detect.npz_format({"Transformer/encoderblock/LayerNorm_0/scale"}) == (
        detect.BIG_VISION_NPZ
    )
    with pytest.raises(UsageError, match="does not exist"):
        detect.path_format(str(tmp_path / "nothing"))
    with pytest.raises(UsageError, match="unknown; use one of"):
        import_params(str(tmp_path / "run"), {}, model=MODEL, format_name="onnx")


def test_the_override_reads_an_npz_in_the_format_it_names(tmp_path):
    spec = _spec()
    weights = _weights(spec, class_token=True, position_rows=5)
    path = str(tmp_path / "weights.bin")  # no telling suffix
    writers.write_npz(path, writers.vit_npz_names(weights, pre_linen=False))
    os.rename(path + ".npz", path)  # np.savez appends .npz to a name without it
    params, chosen = _import(path, spec, format_name=detect.VIT_NPZ)
    assert chosen == detect.VIT_NPZ
    _assert_logits_match(spec, params, weights)


def test_missing_or_unreadable_files_are_one_line_usage_errors(tmp_path):
    spec = _spec()
    with pytest.raises(UsageError, match="does not exist; check the checkpoint path"):
        _import(str(tmp_path / "absent.npz"), spec)
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UsageError, match=r"is not a readable \.npz archive"):
        _import(str(tmp_path / "broken.npz"), spec)
    prefix = str(tmp_path / "ckpt")
    weights = _weights(spec, class_token=True, position_rows=5)
    writers.write_vmoe(prefix, writers.vmoe_names(weights))
    os.remove(prefix + ".data-00001-of-00002")
    with pytest.raises(UsageError, match="data-00001-of-00002 is missing"):
        _import(prefix, spec)


# --- The strict check: one line for every misfit. ---


def _vit_npz(tmp_path, edit) -> str:
    spec = _spec()
    flat = writers.vit_npz_names(_weights(spec, class_token=True, position_rows=5), False)
    edit(flat)
    path = str(tmp_path / "edited.npz")
    writers.write_npz(path, flat)
    return path


def _one_line_error(path: str) -> str:
    with pytest.raises(UsageError) as caught:
        _import(path, _spec())
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"checkpoint {path} does not fit {MODEL}: ")
    assert message.endswith("check that the gin file matches the checkpoint")
    return message


def test_a_dropped_tensor_is_named_in_one_line(tmp_path):
    path = _vit_npz(tmp_path, lambda f: f.pop("Transformer/encoderblock_1/LayerNorm_1/bias"))
    message = _one_line_error(path)
    assert (
        "1 model weight is not in the checkpoint (encoder/x_layers_1/ff_layer/layer_norm/bias)"
        in message
    )


def test_extra_tensors_are_counted_and_named_in_one_line(tmp_path):
    def add_extra(flat):
        for i in range(5):
            flat[f"MAPHead_0/extra_{i}"] = np.zeros(3, np.float32)

    message = _one_line_error(_vit_npz(tmp_path, add_extra))
    assert "5 checkpoint tensors have no place in the model (MAPHead_0/extra_0, " in message
    assert ", ...)" in message


def test_a_wrong_shape_is_named_with_both_shapes_in_one_line(tmp_path):
    def widen_head(flat):
        flat["head/kernel"] = np.zeros((16, 7), np.float32)
        flat["head/bias"] = np.zeros(7, np.float32)

    message = _one_line_error(_vit_npz(tmp_path, widen_head))
    assert "2 shapes differ (head/bias: checkpoint (7,) vs model (5,), head/kernel:" in message


def test_fill_tree_casts_to_the_tree_dtype_and_keeps_the_structure():
    abstract = {"a": {"w": jax.ShapeDtypeStruct((2,), jnp.float32)}}
    filled = tree_mapping.fill_tree(
        abstract, {"a/w": np.array([1, 2], np.float64)}, checkpoint="c", model="m"
    )
    assert filled["a"]["w"].dtype == np.float32
    np.testing.assert_array_equal(filled["a"]["w"], [1, 2])


# --- Position embedding resampling. ---


def test_resampling_is_the_identity_at_equal_size():
    table = np.random.default_rng(0).standard_normal((1, 17, 8)).astype(np.float32)
    lines: list[str] = []
    same = posemb.resample_position_embedding(table, (1, 17, 8), class_slots=1, log=lines.append)
    np.testing.assert_array_equal(same, table)
    assert lines == []


def test_resampling_at_twice_the_grid_keeps_a_smooth_pattern_and_the_class_slot():
    side, new_side, width = 4, 8, 2
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    grid = np.stack([rows + 0.5 * cols, 2.0 * rows - cols], axis=-1)  # linear in position
    table = np.concatenate([np.full((1, 1, width), 9.0), grid.reshape(1, -1, width)], axis=1)
    lines: list[str] = []
    resized = posemb.resample_position_embedding(
        table, (1, 1 + new_side**2, width), class_slots=1, log=lines.append
    )
    assert resized.shape == (1, 1 + new_side**2, width)
    np.testing.assert_array_equal(resized[0, 0], [9.0, 9.0])
    # Bilinear on a linear pattern is exact: new (i, j) sits at old (i, j) * (side-1)/(new-1).
    scale = (side - 1) / (new_side - 1)
    new_rows, new_cols = np.meshgrid(np.arange(new_side), np.arange(new_side), indexing="ij")
    expected = np.stack(
        [scale * (new_rows + 0.5 * new_cols), scale * (2.0 * new_rows - new_cols)], axis=-1
    )
    np.testing.assert_allclose(
        resized[0, 1:].reshape(new_side, new_side, width), expected, atol=1e-5
    )
    assert len(lines) == 1 and "4x4 to a 8x8" in lines[0]


def test_a_checkpoint_at_another_resolution_imports_with_one_log_line(tmp_path):
    small = _spec()
    path = str(tmp_path / "vit.npz")
    weights = _weights(small, class_token=True, position_rows=5)  # 2x2 grid
    writers.write_npz(path, writers.vit_npz_names(weights, pre_linen=False))
    large = _spec(image_size=16)  # 4x4 grid
    lines: list[str] = []
    params, _ = _import(path, large, log=lines.append)
    assert params["position_embedding"].shape == (1, 17, 16)
    assert len(lines) == 1
    assert np.isfinite(_our_logits(large, params)).all()


# --- Shared pieces. ---


def test_pre_linen_numbering_reads_like_linen():
    names = [
        "T/encoderblock_0/LayerNorm_0/scale",
        "T/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel",
        "T/encoderblock_0/LayerNorm_2/scale",
        "T/encoderblock_0/MlpBlock_3/Dense_0/kernel",
        "T/encoderblock_12/LayerNorm_0/scale",
    ]
    renamed = flax_vit.renumber_like_linen(names)
    assert [renamed[n] for n in names] == [
        "T/encoderblock_0/LayerNorm_0/scale",
        "T/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel",
        "T/encoderblock_0/LayerNorm_1/scale",
        "T/encoderblock_0/MlpBlock_0/Dense_0/kernel",
        "T/encoderblock_12/LayerNorm_0/scale",  # block numbers are explicit, never renumbered
    ]


def test_bfloat16_records_become_float32():
    stored = np.array([1.5, -2.0], ml_dtypes.bfloat16).view("V2")
    recovered = npz_reading.recover_float(stored)
    assert recovered.dtype == np.float32
    np.testing.assert_array_equal(recovered, [1.5, -2.0])
