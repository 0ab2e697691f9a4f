"""Memory switches of the encoder stack (VitSpec.remat, VitSpec.scan_layers) change how the
model is compiled, never what it computes; and bf16 compute reaches every matmul but the
router's."""

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from praxis import base_layer

from harness.runtime import optimizer, steps
from models import builders, scan_layout, specs
from models.stats import STATS, flatten_stats, per_block

AUX = base_layer.AUX_LOSS
EXPERTS = 5  # no other dimension of the tiny model is 5, so a shape with a 5 is the router's


def _spec(family: str, num_layers: int = 4, **vit: Any) -> specs.ModelSpec:
    return specs.ModelSpec(
        family=family,
        vit=specs.VitSpec(
            image_size=16,
            patch_size=4,
            num_classes=10,
            model_dims=32,
            num_layers=num_layers,
            mlp_dims=64,
            num_heads=2,
            **vit,
        ),
        # No router noise (the switch loss allows it), so a scanned stack, whose blocks draw
        # other random numbers, computes exactly what the plain one does, aux loss included.
        moe=specs.MoeSpec(num_experts=EXPERTS, capacity_factor=1.0, aux_loss="switch", noise_std=0),
    )


def _model(spec: specs.ModelSpec, compute_dtype: str = "float32") -> base_layer.BaseLayer:
    return base_layer.instantiate(builders.build_model(spec, compute_dtype=compute_dtype))


def _images() -> jax.Array:
    return jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))


def _init(model: base_layer.BaseLayer) -> Any:
    rngs = {"params": jax.random.PRNGKey(1), "random": jax.random.PRNGKey(2)}
    return model.init(rngs, _images())["params"]


def _loss_and_grads(model: base_layer.BaseLayer, params: Any) -> tuple[jax.Array, Any, Any]:
    def loss(p: Any) -> tuple[jax.Array, Any]:
        with base_layer.JaxContext.new_context(hparams=base_layer.JaxContext.HParams()):
            logits, cols = model.apply(
                {"params": p},
                _images(),
                rngs={"random": jax.random.PRNGKey(3)},
                mutable=[AUX, STATS],
            )
        aux = jax.tree_util.tree_leaves(
            cols.get(AUX, {}), is_leaf=lambda x: isinstance(x, base_layer.AuxLossStruct)
        )
        return jnp.sum(jnp.sin(logits)) + sum(jnp.sum(a.value) for a in aux), cols

    (value, cols), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return value, grads, cols


def _stacked(plain: Any, period: int) -> Any:
    """A plain stack's parameters in the scanned layout: block i * period + j of the plain
    stack is repeat i of the scanned block's layer j."""
    layers = plain["encoder"]
    repeats = len(layers) // period
    sub = {
        f"x_layers_{j}": jax.tree_util.tree_map(
            lambda *xs: jnp.stack(xs),
            *(layers[f"x_layers_{i * period + j}"] for i in range(repeats)),
        )
        for j in range(period)
    }
    return {**plain, "encoder": {"repeat": {"sub": sub}}}


def _assert_close(got: Any, want: Any) -> None:
    """Recomputation and scanning fuse ops differently, so float32 sums round differently."""
    jax.tree_util.tree_map(
        lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5), got, want
    )


@pytest.mark.parametrize("remat", ["full", "dots_saveable"])
@pytest.mark.parametrize("family", ["vit", "vmoe", "widenet"])
def test_remat_gives_the_plain_loss_and_gradients(family: str, remat: str) -> None:
    num_layers = 2
    plain = _model(_spec(family, num_layers))
    params = _init(plain)
    want_loss, want_grads, _ = _loss_and_grads(plain, params)
    loss, grads, _ = _loss_and_grads(_model(_spec(family, num_layers, remat=remat)), params)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-5)
    _assert_close(grads, want_grads)


@pytest.mark.parametrize(
    "family, period, remat", [("vit", 1, "none"), ("vit22b", 1, "full"), ("vmoe", 2, "none")]
)
def test_scanned_stack_gives_the_plain_loss_gradients_and_parameter_count(
    family: str, period: int, remat: str
) -> None:
    plain = _model(_spec(family))
    scanned = _model(_spec(family, scan_layers=True, remat=remat))
    params = _init(plain)
    stacked = _stacked(params, period)
    # The scanned model's own initialisation has the same tree and shapes.
    shapes = jax.tree_util.tree_map(jnp.shape, _init(scanned))
    assert shapes == jax.tree_util.tree_map(jnp.shape, stacked)
    count = lambda tree: sum(x.size for x in jax.tree_util.tree_leaves(tree))
    assert count(stacked) == count(params)

    want_loss, want_grads, want_cols = _loss_and_grads(plain, params)
    loss, grads, cols = _loss_and_grads(scanned, stacked)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-5)
    _assert_close(grads, _stacked(want_grads, period))
    # Sown stats come out of the scan with one entry per repeat of the block.
    if family == "vmoe":
        (dropped,) = cols[STATS]["encoder"]["repeat"]["sub"]["x_layers_1"]["ff_layer"]["moe"][
            "dropped_fraction"
        ]
        want = [want_cols[STATS]["encoder"][f"x_layers_{i}"]["ff_layer"]["moe"]["dropped_fraction"]
                for i in (1, 3)]  # fmt: skip
        np.testing.assert_allclose(dropped, np.ravel(want), rtol=1e-6)
        # ... which the trainer lays out per block, as the plain stack reports them.
        unscanned = scan_layout.unscan_stats(cols[STATS], scan_layout.tree_segments(stacked))
        got = per_block(unscanned, "dropped_fraction")
        assert sorted(got) == ["block_01", "block_03"]
        for block, value in per_block(want_cols[STATS], "dropped_fraction").items():
            np.testing.assert_allclose(got[block], value, rtol=1e-6)
    assert scan_layout.tree_segments(params) == []


# (family, placement, depth): V-MoE Every-2 scans one (dense, MoE) pair; Last-2 of 8 blocks
# scans a dense prefix of 4 and then 2 pairs; WideNet scans its shared block over the depth.
SCANNED_UNITS = {
    "vmoe_every_2": ("vmoe", "every_2", 4),
    "vmoe_last_2": ("vmoe", "last_2", 8),
    "widenet": ("widenet", "every_2", 4),
}


def _unit_spec(unit: str, noise: bool = False, **vit: Any) -> specs.ModelSpec:
    family, placement, depth = SCANNED_UNITS[unit]
    spec = _spec(family, depth, **vit)
    moe = dataclasses.replace(spec.moe, placement=placement, noise_std=None if noise else 0)
    return dataclasses.replace(spec, moe=moe)


def _trainer_outputs(model: base_layer.BaseLayer, params: Any, rng: jax.Array | None) -> Any:
    """Loss, gradients, per-block stats and aux losses as the trainer computes them
    (harness/runtime/steps.py: its apply_model unscans the stats)."""

    def loss(p: Any) -> tuple[jax.Array, Any]:
        logits, cols = steps.apply_model(model, p, _images(), rng)
        aux = steps.aux_losses_by_name(cols)
        return jnp.sum(jnp.sin(logits)) + sum(aux.values()), (logits, cols[STATS], aux)

    return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)


def _flat(tree: Any) -> dict[str, Any]:
    return traverse_util.flatten_dict(dict(tree), sep="/")


def _scanned_params(plain_params: Any, scanned: base_layer.BaseLayer) -> Any:
    wanted = _flat(jax.eval_shape(lambda: _init(scanned)))
    tensors, _ = scan_layout.to_layout(_flat(plain_params), wanted)
    return traverse_util.unflatten_dict(tensors, sep="/")


def _per_block_stats(stats: Any) -> dict[str, Any]:
    """{stat name: {block: value}} for every stat sown."""
    names = {re.sub(r"/\d+$", "", path).rsplit("/", 1)[-1] for path in flatten_stats(stats)}
    return {name: per_block(stats, name) for name in sorted(names)}


@pytest.mark.slow
@pytest.mark.parametrize(
    "unit, remat", [("vmoe_last_2", "full"), ("widenet", "none"), ("widenet", "full")]
)
def test_scanned_unit_computes_the_unrolled_stack_on_the_same_weights(unit: str, remat: str):
    plain = _model(_unit_spec(unit))
    scanned = _model(_unit_spec(unit, scan_layers=True, remat=remat))
    params = _init(plain)
    stacked = _scanned_params(params, scanned)
    # The conversion fills the scanned model's own tree exactly, weight for weight.
    shapes = jax.tree_util.tree_map(jnp.shape, _init(scanned))
    assert shapes == jax.tree_util.tree_map(jnp.shape, stacked)
    count = lambda tree: sum(x.size for x in jax.tree_util.tree_leaves(tree))
    assert count(stacked) == count(params)

    # Training mode without router noise or dropout: no random numbers, so exactly equal.
    (want_loss, (want_logits, want_stats, want_aux)), want_grads = _trainer_outputs(
        plain, params, jax.random.PRNGKey(3)
    )
    (loss, (logits, stats, aux)), grads = _trainer_outputs(scanned, stacked, jax.random.PRNGKey(3))
    np.testing.assert_allclose(logits, want_logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-5)
    _assert_close(scan_layout.to_blocks(_flat(grads)), _flat(want_grads))
    assert sorted(aux) == sorted(want_aux) and aux
    for name in aux:
        np.testing.assert_allclose(aux[name], want_aux[name], rtol=1e-5, atol=1e-6)
    got, want = _per_block_stats(stats), _per_block_stats(want_stats)
    assert {n: sorted(b) for n, b in got.items()} == {n: sorted(b) for n, b in want.items()}
    moe_blocks = sorted(want["dropped_fraction"])
    family, placement, depth = SCANNED_UNITS[unit]
    moe_layers = specs.moe_layer_indices(placement, depth) if family == "vmoe" else range(depth)
    assert moe_blocks == [f"block_{i:02d}" for i in moe_layers]
    for name in want:
        _assert_close(got[name], want[name])


def _identity_blocks(params: Any) -> Any:
    """Every block adds zero to its input and the scanned repeats hold the same weights, so
    every MoE layer routes the same tokens with the same router."""
    outputs = ("/post/", "ffn_layer2/", "/moe/wo", "/moe/bo")
    flat = {}
    for path, value in _flat(params).items():
        if path.startswith("encoder/") and any(o in path for o in outputs):
            value = jnp.zeros_like(value)
        elif "/repeat/sub/" in path:
            value = jnp.broadcast_to(value[:1], value.shape)
        flat[path] = value
    return traverse_util.unflatten_dict(flat, sep="/")


@pytest.mark.slow
@pytest.mark.parametrize("unit", ["vmoe_every_2", "widenet"])
def test_each_scanned_repeat_draws_its_own_router_noise(unit: str) -> None:
    """Training: the scan splits the rng per step, so identical repeats on identical tokens
    still route with different noise (the unrolled stack differs by layer path). Eval: no
    noise, so they agree exactly. Which random numbers are drawn differs between the
    layouts, so with noise they agree in distribution only (module docstring)."""
    scanned = _model(_unit_spec(unit, noise=True, scan_layers=True))
    params = _identity_blocks(_init(scanned))
    forward = jax.jit(lambda rng: steps.apply_model(scanned, params, _images(), rng)[1][STATS])
    for rng, differ in ((jax.random.PRNGKey(5), True), (None, False)):
        stats = forward(rng)
        values = [float(v) for v in per_block(stats, "switch_loss").values()]
        assert len(values) == (2 if unit.startswith("vmoe") else 4)
        assert (len(set(values)) == len(values)) if differ else (len(set(values)) == 1), values


@pytest.mark.parametrize("unit, remat", [("vmoe_last_2", "full"), ("widenet", "full"),
                                         ("widenet", "none")])  # fmt: skip
def test_remat_policy_reaches_inside_the_scan(unit: str, remat: str) -> None:
    model = _model(_unit_spec(unit, scan_layers=True, remat=remat))
    params = _init(model)

    def logits(p: Any) -> jax.Array:
        return steps.apply_model(model, p, _images(), jax.random.PRNGKey(0))[0]

    text = str(jax.make_jaxpr(logits)(params))
    policies = re.findall(r"policy=<function (\w+)", text)
    if remat == "none" and unit == "widenet":
        assert policies == []
    else:
        assert policies and set(policies) == {"nothing_saveable"}, policies


@pytest.mark.parametrize("unit", ["vmoe_last_2", "widenet"])
def test_weight_decay_treats_scanned_weights_as_their_blocks(unit: str) -> None:
    plain = jax.eval_shape(lambda: _init(_model(_unit_spec(unit))))
    scanned = jax.eval_shape(lambda: _init(_model(_unit_spec(unit, scan_layers=True))))
    want = {k: np.asarray(v) for k, v in _flat(optimizer.decay_mask(plain)).items()}
    stacked_want, _ = scan_layout.to_layout(want, _flat(scanned))
    got = _flat(optimizer.decay_mask(scanned))
    assert sorted(got) == sorted(stacked_want)
    for path, decays in got.items():
        assert np.all(stacked_want[path] == decays), path
    # Stacked MLP biases and LayerNorms are 2-d, yet not decayed.
    norms_and_biases = [k for k in got if k.endswith(("bias/b", "/bias", "/scale"))]
    assert norms_and_biases and not any(got[k] for k in norms_and_biases)


_DOT = re.compile(r"stablehlo\.dot_general .*: \((.*)\) -> (tensor<[^>]*>)")


@pytest.mark.parametrize("family", ["vit", "vmoe", "widenet", "vit22b"])
def test_bfloat16_reaches_every_matmul_but_the_routers(family: str) -> None:
    model = _model(_spec(family, 2), compute_dtype="bfloat16")
    params = _init(model)

    def loss(p: Any) -> jax.Array:
        logits, _ = model.apply(
            {"params": p}, _images(), rngs={"random": jax.random.PRNGKey(3)}, mutable=[AUX, STATS]
        )
        assert logits.dtype == jnp.float32
        return jnp.sum(logits)

    text = jax.jit(jax.grad(loss)).lower(params).as_text()
    dots = [" ".join(m.groups()) for m in (_DOT.search(line) for line in text.splitlines()) if m]
    assert len(dots) > 10
    f32 = [dot for dot in dots if "f32" in dot]
    # The router stays float32 on purpose (top-k and softmax are sensitive to rounding): every
    # float32 matmul is one of its, recognisable by the expert dimension.
    assert all(re.search(rf"[<x]{EXPERTS}x", dot) for dot in f32), f32
    assert bool(f32) == (family in ("vmoe", "widenet"))
    bf16 = [dot for dot in dots if "bf16" in dot]
    assert len(bf16) + len(f32) == len(dots)
    if family in ("vmoe", "widenet"):  # expert matmuls [E, G, Cap, D] x [E, D, H]
        assert any(re.search(rf"tensor<{EXPERTS}x32x64xbf16>", dot) for dot in bf16)


@pytest.mark.parametrize("family", ["vit", "vmoe"])
def test_inspect_counts_every_layer_of_a_scanned_stack(family: str) -> None:
    # praxis keeps a scanned weight's layer axis out of its metadata shape (repeat_prefix), and
    # XLA counts a loop body once: neither may make a scanned model look smaller.
    from harness.measure import model_summary

    plain = model_summary.inspect_model(_spec(family), [1, 1, 1])
    scanned = model_summary.inspect_model(_spec(family, scan_layers=True), [1, 1, 1])
    assert scanned == plain
    assert plain["params_total"] > 0 and plain["xla_gflops_per_image"] > 0
