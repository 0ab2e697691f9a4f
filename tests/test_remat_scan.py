"""Memory switches of the encoder stack (VitSpec.remat, VitSpec.scan_layers) change how the
model is compiled, never what it computes; and bf16 compute reaches every matmul but the
router's."""

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from praxis import base_layer

from models import builders, specs
from models.stats import STATS, layers_per_repeat, per_block, unscan_stats

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
        unscanned = unscan_stats(cols[STATS], layers_per_repeat(scanned))
        got = per_block(unscanned, "dropped_fraction")
        assert sorted(got) == ["block_01", "block_03"]
        for block, value in per_block(want_cols[STATS], "dropped_fraction").items():
            np.testing.assert_allclose(got[block], value, rtol=1e-6)
    assert layers_per_repeat(plain) == 0


def test_scan_is_refused_for_widenet() -> None:
    with pytest.raises(ValueError, match="scan_layers=True is not supported for WideNet"):
        builders.build_model(_spec("widenet", scan_layers=True))


def test_bad_remat_fails_when_the_spec_is_built() -> None:
    with pytest.raises(ValueError, match=r"VitSpec.remat='some' is unknown"):
        specs.VitSpec(remat="some")


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
