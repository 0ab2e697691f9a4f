"""harness.export: every format, read back by our importers, gives the exported run's logits;
names, shapes and layouts are the target code bases'; bad input is one line and writes nothing."""

import dataclasses
import functools
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from praxis import base_layer

from harness.checkpoint_formats import (
    detect,
    safetensors_file,
    tree_mapping,
    vmoe_msgpack,
    vmoe_reference,
)
from harness.checkpoint_formats.importer import import_params
from harness.config.experiment import Experiment
from harness.config.experiment_file import write_experiment
from harness.config.train_spec import MeshSpec, OptimizerSpec, TrainSpec
from harness.data.spec import DataSpec
from harness.errors import UsageError
from harness.exports import export, model_support, vmoe_checkpoint
from harness.runtime.checkpointing import Checkpointer
from harness.runtime.steps import TrainState
from models import builders, specs
from models.stats import STATS
from tests import checkpoint_writers as writers
from tests import reference_vit, timm_reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
# C = E/k: every expert can take every token, so no token is dropped and timm_reference's
# capacity-free top-k is exact.
TINY_MOE = specs.MoeSpec(num_experts=4, num_selected_experts=2, capacity_factor=2.0)
SPECS = {
    "vit": specs.ModelSpec(family="vit", vit=TINY),
    "vit_gap": specs.ModelSpec(family="vit", vit=dataclasses.replace(TINY, pooling="gap")),
    "vit_pre_logits": specs.ModelSpec(family="vit", vit=dataclasses.replace(TINY, pre_logits=True)),
    "vmoe": specs.ModelSpec(family="vmoe", vit=TINY, moe=TINY_MOE),
    "vmoe_expert_choice": specs.ModelSpec(
        family="vmoe", vit=TINY, moe=dataclasses.replace(TINY_MOE, router="expert_choice")
    ),
    "vmoe_scanned": specs.ModelSpec(
        family="vmoe",
        vit=dataclasses.replace(TINY, num_layers=4, scan_layers=True),
        moe=TINY_MOE,
    ),
}
STEP = 7
EXTENSIONS = {"vit_npz": ".npz", "vmoe": "", "safetensors": ".safetensors"}


def _images(spec: specs.ModelSpec) -> np.ndarray:
    v = spec.vit
    rng = np.random.default_rng(0)
    return rng.standard_normal((2, v.image_size, v.image_size, v.num_channels)).astype(np.float32)


@functools.cache
def _model(spec: specs.ModelSpec) -> base_layer.BaseLayer:
    return base_layer.instantiate(builders.build_model(spec))


def _abstract_params(spec: specs.ModelSpec) -> dict:
    rngs = {base_layer.PARAMS: jax.random.PRNGKey(0), base_layer.RANDOM: jax.random.PRNGKey(1)}
    abstract = jax.eval_shape(_model(spec).init, rngs, jnp.asarray(_images(spec)))
    return abstract[base_layer.PARAMS]


def _logits(spec: specs.ModelSpec, params: dict) -> np.ndarray:
    context = base_layer.JaxContext.HParams(do_eval=True)
    with base_layer.JaxContext.new_context(hparams=context):
        logits, _ = _model(spec).apply(
            {base_layer.PARAMS: params},
            jnp.asarray(_images(spec)),
            mutable=[base_layer.AUX_LOSS, STATS],
        )
    return np.asarray(logits)


def _random_params(spec: specs.ModelSpec, seed: int) -> dict:
    """Every weight O(0.1-1) and different, so a misplaced or mistransposed one shows (a
    fresh init has zero biases and unit norms, which would hide mistakes)."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda x: (0.3 * rng.standard_normal(x.shape)).astype(x.dtype),
        _abstract_params(spec),
    )


def _save_run(run_dir: str, spec: specs.ModelSpec, seed: int = 3) -> dict:
    """A run directory as harness.run leaves it: experiment.json and an orbax checkpoint."""
    params = _random_params(spec, seed)
    state = TrainState(step=jnp.asarray(STEP), params=params, opt_state={"count": jnp.asarray(1)})
    checkpointer = Checkpointer(run_dir, keep=1)
    checkpointer.save(STEP, state)
    checkpointer.close()
    experiment = Experiment(
        model=spec,
        train=TrainSpec(),
        mesh=MeshSpec(),
        optimizer=OptimizerSpec(),
        data=DataSpec(dataset="fashion_mnist"),
    )
    write_experiment(run_dir, experiment)
    return params


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[str, dict]]:
    """{name: (run directory, its params)} for every spec in SPECS."""
    saved = {}
    for name, spec in SPECS.items():
        run_dir = str(tmp_path_factory.mktemp(name))
        saved[name] = (run_dir, _save_run(run_dir, spec))
    return saved


def _export(runs, tmp_path, name: str, format_name: str, **kwargs) -> str:
    output = str(tmp_path / f"{name}{EXTENSIONS[format_name]}")
    export.export_run(runs[name][0], format_name, output, log=lambda _: None, **kwargs)
    return output


def _reimport(path: str, spec: specs.ModelSpec) -> tuple[dict, str]:
    return import_params(path, _abstract_params(spec), model="tiny.gin")


def _assert_same_params(reimported: dict, original: dict) -> None:
    """Bit-equal, but for LayerNorm scales: flax stores praxis's `1 + scale`, so they come
    back as float32 (scale + 1) - 1, off by at most half an ulp of 1."""
    ours = tree_mapping.flat_paths(jax.device_get(original))
    back = tree_mapping.flat_paths(reimported)
    assert back.keys() == ours.keys()
    for name, value in ours.items():
        if name.endswith("/scale"):
            expected = (value.astype(np.float32) + np.float32(1)) - np.float32(1)
            np.testing.assert_array_equal(back[name], expected, err_msg=name)
        else:
            np.testing.assert_array_equal(back[name], value, err_msg=name)


# --- Round trips: export, import with our importers, same logits. ---

ROUND_TRIPS = [
    ("vit", "vit_npz"),
    ("vit_gap", "vit_npz"),
    ("vit_pre_logits", "vit_npz"),
    ("vit", "vmoe"),
    ("vmoe", "vmoe"),
    ("vit_pre_logits", "vmoe"),
    ("vit", "safetensors"),
    ("vit_gap", "safetensors"),
    ("vmoe", "safetensors"),
    ("vmoe_expert_choice", "vmoe"),
    ("vmoe_expert_choice", "safetensors"),
]


@pytest.mark.parametrize(("name", "format_name"), ROUND_TRIPS)
def test_export_then_import_gives_the_runs_logits(runs, tmp_path, name, format_name):
    spec, (_, params) = SPECS[name], runs[name]
    path = _export(runs, tmp_path, name, format_name)
    reimported, chosen = _reimport(path, spec)
    assert chosen == {"vit_npz": detect.VIT_NPZ, "vmoe": detect.VMOE}.get(format_name, format_name)
    _assert_same_params(reimported, params)
    np.testing.assert_allclose(
        _logits(spec, reimported), _logits(spec, params), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("format_name", ["vmoe", "safetensors"])
def test_a_scanned_stack_is_exported_block_by_block(runs, tmp_path, format_name):
    """A scan_layers=True V-MoE comes out like the unrolled model, which then computes the
    scanned run's logits."""
    scanned = SPECS["vmoe_scanned"]
    unrolled = dataclasses.replace(scanned, vit=dataclasses.replace(scanned.vit, scan_layers=False))
    path = _export(runs, tmp_path, "vmoe_scanned", format_name)
    reimported, _ = _reimport(path, unrolled)
    original = runs["vmoe_scanned"][1]
    np.testing.assert_allclose(
        _logits(unrolled, reimported), _logits(scanned, original), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("format_name", ["vmoe", "safetensors", "run"])
def test_a_checkpoint_imports_into_a_model_of_the_other_layout(runs, tmp_path, format_name):
    """Per-block files (and an unrolled run directory) fill a scanned model, and a scanned
    run directory fills an unrolled one; either way the logits are the original model's."""
    scanned = SPECS["vmoe_scanned"]
    unrolled = dataclasses.replace(scanned, vit=dataclasses.replace(scanned.vit, scan_layers=False))
    source, target = ("vmoe_scanned", unrolled) if format_name == "run" else ("vmoe", scanned)
    if format_name == "run":
        path = runs[source][0]
    else:  # the unrolled 2-block run, into a scanned 2-block model
        target = dataclasses.replace(SPECS["vmoe"], vit=dataclasses.replace(TINY, scan_layers=True))
        path = _export(runs, tmp_path, source, format_name)
    reimported, _ = _reimport(path, target)
    original_spec = SPECS[source]
    np.testing.assert_allclose(
        _logits(target, reimported), _logits(original_spec, runs[source][1]), rtol=1e-5, atol=1e-5
    )


# --- The targets' conventions, from their own loaders. ---


def _vision_transformer_names(depth: int, pre_logits: bool, class_token: bool) -> set[str]:
    """What timm's `_load_weights` reads from an unprefixed npz (pre-Linen numbering:
    MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3), plus vision_transformer's
    pre_logits."""
    names = {"embedding/kernel", "embedding/bias", "Transformer/posembed_input/pos_embedding"}
    names |= {"Transformer/encoder_norm/scale", "Transformer/encoder_norm/bias"}
    names |= {"head/kernel", "head/bias"}
    names |= {"cls"} if class_token else set()
    names |= {"pre_logits/kernel", "pre_logits/bias"} if pre_logits else set()
    for i in range(depth):
        block = f"Transformer/encoderblock_{i}"
        for norm in ("LayerNorm_0", "LayerNorm_2"):
            names |= {f"{block}/{norm}/scale", f"{block}/{norm}/bias"}
        for projection in ("query", "key", "value", "out"):
            attention = f"{block}/MultiHeadDotProductAttention_1/{projection}"
            names |= {f"{attention}/kernel", f"{attention}/bias"}
        for dense in ("Dense_0", "Dense_1"):
            names |= {f"{block}/MlpBlock_3/{dense}/kernel", f"{block}/MlpBlock_3/{dense}/bias"}
    return names


@pytest.mark.parametrize("name", ["vit", "vit_gap", "vit_pre_logits"])
def test_npz_names_and_shapes_are_what_timm_load_weights_reads(runs, tmp_path, name):
    spec = SPECS[name]
    v = spec.vit
    path = _export(runs, tmp_path, name, "vit_npz")
    with np.load(path, allow_pickle=False) as archive:
        arrays = {n: archive[n] for n in archive.files}
    assert set(arrays) == _vision_transformer_names(
        v.num_layers, v.pre_logits, class_token=spec.pooling == "token"
    )
    d, h, hd, p = v.model_dims, v.num_heads, v.model_dims // v.num_heads, v.patch_size
    tokens = (v.image_size // p) ** 2 + (spec.pooling == "token")
    assert arrays["embedding/kernel"].shape == (p, p, v.num_channels, d)  # HWIO
    assert arrays["Transformer/posembed_input/pos_embedding"].shape == (1, tokens, d)
    attention = "Transformer/encoderblock_0/MultiHeadDotProductAttention_1"
    assert arrays[f"{attention}/query/kernel"].shape == (d, h, hd)
    assert arrays[f"{attention}/out/kernel"].shape == (h, hd, d)
    assert arrays["Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"].shape == (d, v.mlp_dims)
    assert arrays["head/kernel"].shape == (d, v.num_classes)
    assert all(a.dtype == np.float32 for a in arrays.values())


def _npz_as_reference_weights(arrays: dict[str, np.ndarray], depth: int) -> dict:
    """The neutral weights of tests/reference_vit.py, read from a vision_transformer npz."""

    def dense(prefix):
        return {"kernel": arrays[f"{prefix}/kernel"], "bias": arrays[f"{prefix}/bias"]}

    def norm(prefix):
        return {"scale": arrays[f"{prefix}/scale"], "bias": arrays[f"{prefix}/bias"]}

    blocks = []
    for i in range(depth):
        b = f"Transformer/encoderblock_{i}"
        attention = f"{b}/MultiHeadDotProductAttention_1"
        blocks.append(
            {
                "norm1": norm(f"{b}/LayerNorm_0"),
                "norm2": norm(f"{b}/LayerNorm_2"),
                "attention": {
                    n: dense(f"{attention}/{n}") for n in ("query", "key", "value", "out")
                },
                "mlp": {n: dense(f"{b}/MlpBlock_3/{n}") for n in ("Dense_0", "Dense_1")},
            }
        )
    weights = {
        "embedding": dense("embedding"),
        "posemb": arrays["Transformer/posembed_input/pos_embedding"],
        "blocks": blocks,
        "encoder_norm": norm("Transformer/encoder_norm"),
        "head": dense("head"),
    }
    if "cls" in arrays:
        weights["cls"] = arrays["cls"]
    if "pre_logits/kernel" in arrays:
        weights["pre_logits"] = dense("pre_logits")
    return weights


@pytest.mark.parametrize("name", ["vit", "vit_gap", "vit_pre_logits"])
def test_the_npz_computes_the_runs_logits_in_vision_transformers_model(runs, tmp_path, name):
    """Independently of our importer: tests/reference_vit.py (vit_jax's forward pass) on the
    exported arrays gives the run's logits."""
    spec, (_, params) = SPECS[name], runs[name]
    path = _export(runs, tmp_path, name, "vit_npz")
    with np.load(path, allow_pickle=False) as archive:
        weights = _npz_as_reference_weights(dict(archive), spec.vit.num_layers)
    expected = reference_vit.logits(weights, _images(spec))
    np.testing.assert_allclose(_logits(spec, params), expected, rtol=2e-4, atol=2e-4)


def _timm_state_dict_shapes(spec: specs.ModelSpec) -> dict[str, tuple[int, ...]]:
    """timm VisionTransformer's state dict for these kwargs (class_token, fc_norm=False),
    V-MoE blocks' `mlp` as harness/exports/timm_layout.py names them."""
    v = spec.vit
    d, m, p = v.model_dims, v.mlp_dims, v.patch_size
    token = spec.pooling == "token"
    shapes = {
        "patch_embed.proj.weight": (d, v.num_channels, p, p),
        "patch_embed.proj.bias": (d,),
        "pos_embed": (1, (v.image_size // p) ** 2 + token, d),
        "norm.weight": (d,),
        "norm.bias": (d,),
        "head.weight": (v.num_classes, d),
        "head.bias": (v.num_classes,),
    }
    if token:
        shapes["cls_token"] = (1, 1, d)
    for i in range(v.num_layers):
        b = f"blocks.{i}"
        shapes |= {f"{b}.norm1.weight": (d,), f"{b}.norm1.bias": (d,)}
        shapes |= {f"{b}.norm2.weight": (d,), f"{b}.norm2.bias": (d,)}
        shapes |= {f"{b}.attn.qkv.weight": (3 * d, d), f"{b}.attn.qkv.bias": (3 * d,)}
        shapes |= {f"{b}.attn.proj.weight": (d, d), f"{b}.attn.proj.bias": (d,)}
        mlps = [f"{b}.mlp"]
        if i in spec.moe_layers:
            shapes[f"{b}.mlp.router.weight"] = (spec.moe.num_experts, d)
            mlps = [f"{b}.mlp.experts.{e}" for e in range(spec.moe.num_experts)]
        for mlp in mlps:
            shapes |= {f"{mlp}.fc1.weight": (m, d), f"{mlp}.fc1.bias": (m,)}
            shapes |= {f"{mlp}.fc2.weight": (d, m), f"{mlp}.fc2.bias": (d,)}
    return shapes


@pytest.mark.parametrize("name", ["vit", "vit_gap", "vmoe"])
def test_safetensors_holds_timms_state_dict_and_computes_the_runs_logits(runs, tmp_path, name):
    """Names and shapes are timm's; a numpy transcription of timm's forward pass (torch
    layouts: Linear [out, in], Conv2d OIHW, fused qkv) on them gives the run's logits."""
    spec, (_, params) = SPECS[name], runs[name]
    path = _export(runs, tmp_path, name, "safetensors")
    with open(path, "rb") as f:
        state, metadata = safetensors_file.decode(f.read())
    assert {n: a.shape for n, a in state.items()} == _timm_state_dict_shapes(spec)
    kwargs = json.loads(metadata["timm_kwargs"])
    assert kwargs["global_pool"] == ("token" if spec.pooling == "token" else "avg")
    assert kwargs["class_token"] == (spec.pooling == "token") and kwargs["fc_norm"] is False
    assert kwargs["embed_dim"] * kwargs["mlp_ratio"] == spec.vit.mlp_dims
    assert metadata["format"] == ("timm_vit_moe" if spec.moe_layers else "timm_vit")
    assert metadata["step"] == str(STEP)
    if spec.moe_layers:
        moe = json.loads(metadata["moe"])
        assert moe["blocks"] == spec.moe_layers and moe["num_experts"] == spec.moe.num_experts
    expected = timm_reference.logits(
        state,
        _images(spec).transpose(0, 3, 1, 2),
        heads=kwargs["num_heads"],
        global_pool=kwargs["global_pool"],
        k=spec.moe.num_selected_experts,
    )
    np.testing.assert_allclose(_logits(spec, params), expected, rtol=2e-4, atol=2e-4)


def test_vmoe_checkpoint_has_vmoes_names_index_version_and_shards(runs, tmp_path):
    spec = SPECS["vmoe"]
    prefix = _export(runs, tmp_path, "vmoe", "vmoe")
    assert sorted(os.listdir(tmp_path)) == ["vmoe.data-00000-of-00001", "vmoe.index"]
    with open(prefix + ".index", "rb") as f:
        index = vmoe_msgpack.unpack(f.read())
    assert index["version"] == "20220622" and index["shard_count"] == 1
    names = dict(vmoe_msgpack.index_leaves(index["index"]))
    v = spec.vit
    reference = reference_vit.random_weights(
        0,
        patch_size=v.patch_size,
        channels=v.num_channels,
        width=v.model_dims,
        depth=v.num_layers,
        mlp_dims=v.mlp_dims,
        heads=v.num_heads,
        classes=v.num_classes,
        position_rows=(v.image_size // v.patch_size) ** 2 + 1,
        class_token=True,
        pre_logits=False,
        moe_blocks=tuple(spec.moe_layers),
        experts=spec.moe.num_experts,
    )
    expected = writers.vmoe_names(reference)  # vmoe/nn/vit_moe.py's module names
    assert set(names) == set(expected)
    for name, info in names.items():
        assert info.global_shape.shape == expected[name].shape, name
        assert info.global_shape.dtype == np.float32


def test_vmoe_chunks_and_shards_are_read_back_exactly(tmp_path):
    """Arrays split into several chunks over several shards, as big ones are."""
    rng = np.random.default_rng(0)
    arrays = {
        "Encoder/a/kernel": rng.standard_normal((7, 3, 5)).astype(np.float32),
        "Encoder/b": rng.standard_normal(11).astype(np.float32),
        "cls": rng.standard_normal((1, 1, 4)).astype(np.float32),
        "step": np.asarray(3, np.int32),
    }
    index, shards = vmoe_checkpoint.encode(arrays, max_chunk_bytes=128, shard_bytes=100)
    assert len(shards) == 5  # ceil(484 bytes / 100 per shard)
    prefix = str(tmp_path / "ckpt")
    with open(prefix + ".index", "wb") as f:
        f.write(index)
    for i, shard in enumerate(shards):
        with open(vmoe_checkpoint.shard_path(prefix, i, len(shards)), "wb") as f:
            f.write(shard)
    infos = dict(vmoe_msgpack.index_leaves(vmoe_msgpack.unpack(index)["index"]))
    assert len(infos["Encoder/a/kernel"].global_slices) == 4  # rows of 60 bytes, 2 a chunk
    read = vmoe_reference.read_arrays(prefix)
    assert read.keys() == arrays.keys()
    for name, value in arrays.items():
        np.testing.assert_array_equal(read[name], value, err_msg=name)


# --- The safetensors file itself. ---


def test_safetensors_layout_is_header_length_json_then_aligned_data():
    tensors = {"b": np.arange(3, dtype=np.float32), "a": np.ones((2, 2), np.int64)}
    data = safetensors_file.encode(tensors, {"k": "v"})
    length = int.from_bytes(data[:8], "little")
    assert (8 + length) % 8 == 0
    header = json.loads(data[8 : 8 + length])
    assert header["__metadata__"] == {"k": "v"}
    assert header["a"] == {"dtype": "I64", "shape": [2, 2], "data_offsets": [0, 32]}
    assert header["b"] == {"dtype": "F32", "shape": [3], "data_offsets": [32, 44]}
    assert data[8 + length :] == tensors["a"].tobytes() + tensors["b"].tobytes()
    decoded, metadata = safetensors_file.decode(data)
    assert metadata == {"k": "v"}
    for name, value in tensors.items():
        np.testing.assert_array_equal(decoded[name], value)
        assert decoded[name].dtype == value.dtype


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d[:-1],  # truncated data
        lambda d: d + b"\0",  # a trailing byte
        lambda d: d[:4],  # no header length
        lambda d: (10**9).to_bytes(8, "little") + d[8:],  # a header longer than the file
    ],
    ids=["truncated", "trailing", "short", "long-header"],
)
def test_a_malformed_safetensors_file_is_refused(damage):
    data = safetensors_file.encode({"x": np.ones(4, np.float32)})
    with pytest.raises(safetensors_file.FormatError):
        safetensors_file.decode(damage(data))


def test_the_safetensors_library_reads_our_files_where_it_is_installed():
    library = pytest.importorskip("safetensors.numpy")
    tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "i": np.arange(2)}
    loaded = library.load(safetensors_file.encode(tensors, {"k": "v"}))
    for name, value in tensors.items():
        np.testing.assert_array_equal(loaded[name], value)


# --- Refusals: one line, nothing written. ---


@pytest.mark.parametrize(
    ("name", "format_name", "message"),
    [
        ("vmoe", "vit_npz", "holds dense ViTs only"),
        ("vit_pre_logits", "safetensors", "pre-logits layer, which timm's VisionTransformer"),
    ],
)
def test_a_model_the_format_cannot_hold_is_refused(runs, tmp_path, name, format_name, message):
    with pytest.raises(UsageError, match=message):
        _export(runs, tmp_path, name, format_name)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (specs.ModelSpec(family="vit22b", vit=TINY), "is a vit22b model"),
        (specs.ModelSpec(family="widenet", vit=TINY, moe=TINY_MOE), "is a widenet model"),
        (
            specs.ModelSpec(
                family="vmoe", vit=TINY, moe=dataclasses.replace(TINY_MOE, router="soft")
            ),
            "MoeSpec.router='soft'",
        ),
    ],
)
@pytest.mark.parametrize("format_name", model_support.FORMATS)
def test_models_without_a_form_in_the_targets_are_refused(spec, message, format_name):
    with pytest.raises(UsageError, match=re.escape(message)):
        model_support.check_model(spec, format_name, "runs/x")


def test_an_existing_output_is_replaced_only_with_overwrite(runs, tmp_path):
    output = tmp_path / "vit.npz"
    output.write_bytes(b"keep me")
    with pytest.raises(UsageError, match="exists; pass --overwrite to replace it"):
        _export(runs, tmp_path, "vit", "vit_npz")
    assert output.read_bytes() == b"keep me"
    _export(runs, tmp_path, "vit", "vit_npz", overwrite=True)
    assert output.read_bytes()[:2] == b"PK"
    assert sorted(os.listdir(tmp_path)) == ["vit.npz"], "no temporary file left"


def test_a_symlink_or_folder_is_never_replaced(runs, tmp_path):
    target = tmp_path / "elsewhere.npz"
    target.write_bytes(b"keep me")
    (tmp_path / "vit.npz").symlink_to(target)
    with pytest.raises(UsageError, match="is not a regular file; refusing to replace it"):
        _export(runs, tmp_path, "vit", "vit_npz", overwrite=True)
    assert target.read_bytes() == b"keep me"
    (tmp_path / "vit.safetensors").mkdir()
    with pytest.raises(UsageError, match="is a folder"):
        _export(runs, tmp_path, "vit", "safetensors", overwrite=True)


def test_overwriting_a_vmoe_checkpoint_removes_its_old_shards(runs, tmp_path):
    prefix = tmp_path / "vmoe"
    stale = tmp_path / "vmoe.data-00002-of-00003"
    stale.write_bytes(b"old")
    with pytest.raises(UsageError, match=r"vmoe\.data-00002-of-00003 exists"):
        _export(runs, tmp_path, "vmoe", "vmoe")
    _export(runs, tmp_path, "vmoe", "vmoe", overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["vmoe.data-00000-of-00001", "vmoe.index"]
    assert vmoe_reference.read_arrays(str(prefix))


def test_the_wrong_suffix_is_refused_before_anything_is_read(tmp_path):
    with pytest.raises(UsageError, match=r"must end with \.safetensors"):
        export.export_run(str(tmp_path / "absent"), "safetensors", str(tmp_path / "x.st"))


def test_a_failed_write_leaves_no_file_and_no_temporary(tmp_path):
    """The second file cannot be created: the first, already written to a temporary name,
    is not put in place either."""
    contents = {str(tmp_path / "missing" / "a"): b"1", str(tmp_path / "b.index"): b"2"}
    with pytest.raises(OSError):
        export.write_together(contents)
    assert os.listdir(tmp_path) == []


def test_the_command_writes_the_file_and_refuses_bad_input_in_one_line(runs, tmp_path):
    run_dir = runs["vit"][0]
    output = str(tmp_path / "vit.safetensors")
    command = [sys.executable, "-m", "harness.export", run_dir]

    def run(*flags: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*command, *flags], capture_output=True, text=True, cwd=ROOT, timeout=300
        )

    done = run("--format=safetensors", f"--output={output}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"export: {output}"
    reimported, _ = _reimport(output, SPECS["vit"])
    _assert_same_params(reimported, runs["vit"][1])
    for flags, message in [
        (("--format=safetensors", f"--output={output}"), "exists; pass --overwrite"),
        (("--format=onnx", f"--output={output}"), "--format"),
        ((f"--output={output}",), "--format is required"),
    ]:
        refused = run(*flags)
        assert refused.returncode == 2, refused.stderr
        assert len(refused.stderr.splitlines()) == 1 and refused.stderr.startswith("error: ")
        assert message in refused.stderr
