"""Vit22bBlock: each switch changes what it should and nothing else, and the maths is right.

Numbers are checked against a small hand-written reference of the block (plain jnp, praxis
LayerNorm convention `x_hat * (1 + scale) + bias`), fused against unfused on the same weights,
and parameter counts against the closed-form formula.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from praxis import base_layer, pax_fiddle
from praxis.layers import attentions, transformers

from models.stats import STATS
from models.vit22b import Vit22bBlock, vit22b_block_param_count

D, M, N = 16, 32, 4  # model dim, MLP dim, heads; H = 4, A = 16.
B, T = 2, 6
H = D // N
A = N * H

# (parallel, qk_norm, use_bias, fused); fused is ignored by the sequential block, so skip those.
VARIANTS = [v for v in itertools.product([True, False], repeat=4) if v[0] or v[3]]


def _config(**fields: object) -> pax_fiddle.Config:
    defaults: dict[str, object] = dict(name="block", input_dims=D, hidden_dims=M, num_heads=N)
    defaults.update(fields)
    return pax_fiddle.Config(Vit22bBlock, **defaults)


def _inputs(seed: int = 0) -> tuple[jax.Array, jax.Array, jax.Array]:
    x = jax.random.normal(jax.random.PRNGKey(seed), (B, T, D))
    # The last two positions of example 1 are padding, so the mask is not trivially zero.
    paddings = jnp.zeros((B, T)).at[1, -2:].set(1.0)
    mask = attentions.convert_paddings_to_mask(paddings)  # [B, 1, 1, T], additive.
    return x, paddings, mask


def _init(layer: Vit22bBlock, seed: int = 0) -> dict:
    x, paddings, mask = _inputs()
    return layer.init(jax.random.PRNGKey(seed), x, paddings, mask)["params"]


def _perturb(params: dict, seed: int = 1) -> dict:
    """Adds noise to every leaf, so zero-initialised biases and LN params matter in the maths."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    noisy = [p + 0.2 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, noisy)


def _apply(layer: Vit22bBlock, params: dict, x: jax.Array, paddings, mask) -> tuple:
    (out, second), mutated = layer.apply({"params": params}, x, paddings, mask, mutable=[STATS])
    assert second is None
    (max_logit,) = mutated[STATS]["max_attention_logit"]
    return out, max_logit


def _n_params(params: dict) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))


# ---------------------------------------------------------------------------------------------
# A reference block written directly from the paper's equations.


def _ref_ln(x: jax.Array, p: dict, centered: bool = True) -> jax.Array:
    """LayerNorm, or with centered=False the paper's RMSNorm: no mean subtracted, no bias."""
    mean = x.mean(-1, keepdims=True) if centered else 0.0
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    y = (x - mean) / jnp.sqrt(var + 1e-6) * (1.0 + p["scale"])
    return y + p["bias"] if "bias" in p else y


def _ref_attention(
    x: jax.Array, p: dict, mask: jax.Array, centered: bool
) -> tuple[jax.Array, jax.Array]:
    def proj(name: str) -> jax.Array:
        y = x @ p[f"w_{name}"] + p.get(f"b_{name}", 0.0)
        return y.reshape(B, T, N, H)

    q, k, v = proj("q"), proj("k"), proj("v")
    if "query_norm" in p:
        q, k = _ref_ln(q, p["query_norm"], centered), _ref_ln(k, p["key_norm"], centered)
    logits = jnp.einsum("btnh,bsnh->bnts", q, k) / math.sqrt(H) + mask
    probs = jax.nn.softmax(logits, axis=-1)
    context = jnp.einsum("bnts,bsnh->btnh", probs, v).reshape(B, T, A)
    return context @ p["w_o"] + p.get("b_o", 0.0), logits.max()


def _ref_mlp(x: jax.Array, p: dict) -> jax.Array:
    hidden = jax.nn.gelu(x @ p["w_mlp_in"] + p["b_mlp_in"], approximate=True)
    return hidden @ p["w_mlp_out"] + p["b_mlp_out"]


def _reference(p: dict, x: jax.Array, mask: jax.Array, parallel: bool, centered: bool) -> tuple:
    if parallel:
        y = _ref_ln(x, p["layer_norm"], centered)
        attn, max_logit = _ref_attention(y, p, mask, centered)
        return x + attn + _ref_mlp(y, p), max_logit
    attn, max_logit = _ref_attention(
        _ref_ln(x, p["attention_layer_norm"], centered), p, mask, centered
    )
    x = x + attn
    return x + _ref_mlp(_ref_ln(x, p["mlp_layer_norm"], centered), p), max_logit


def _fuse(p: dict, use_bias: bool) -> dict:
    """Unfused parallel params -> the fused layer's params computing the same function."""
    fused = {k: v for k, v in p.items() if k in ("layer_norm", "query_norm", "key_norm")}
    fused["w_in"] = jnp.concatenate([p["w_q"], p["w_k"], p["w_v"], p["w_mlp_in"]], axis=1)
    fused["w_out"] = jnp.concatenate([p["w_o"], p["w_mlp_out"]], axis=0)
    if use_bias:
        fused["b_in"] = jnp.concatenate([p["b_q"], p["b_k"], p["b_v"], p["b_mlp_in"]])
        fused["b_out"] = p["b_o"] + p["b_mlp_out"]
    else:
        fused["b_in"] = p["b_mlp_in"]
        fused["b_out"] = p["b_mlp_out"]
    return fused


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("parallel", "qk_norm", "use_bias", "fused"), VARIANTS)
def test_shape_and_finite_nonzero_gradients(parallel, qk_norm, use_bias, fused):
    layer = base_layer.instantiate(
        _config(parallel=parallel, qk_norm=qk_norm, use_bias=use_bias, fused=fused)
    )
    x, paddings, mask = _inputs()
    params = _perturb(_init(layer))

    def loss(p: dict) -> jax.Array:
        out, _ = _apply(layer, p, x, paddings, mask)
        assert out.shape == (B, T, D)
        return jnp.sum(out**2)

    grads = jax.grad(loss)(params)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)), path
        # Every parameter takes part in the function (no dead variables).
        assert np.any(g != 0), path


# (use_bias, centered_norm): the paper block (RMSNorm), the biased ViT block (LayerNorm), and
# the no-bias block with centring switched back on (the ablation of centring alone).
NORMS = [(False, None), (True, None), (False, True)]


@pytest.mark.parametrize("qk_norm", [True, False])
@pytest.mark.parametrize(("use_bias", "centered_norm"), NORMS)
@pytest.mark.parametrize("parallel", [True, False])
def test_unfused_block_matches_reference_equations(parallel, qk_norm, use_bias, centered_norm):
    switches = dict(parallel=parallel, qk_norm=qk_norm, use_bias=use_bias, fused=False)
    layer = base_layer.instantiate(_config(centered_norm=centered_norm, **switches))
    x, paddings, mask = _inputs()
    params = _perturb(_init(layer))
    out, max_logit = _apply(layer, params, x, paddings, mask)
    centered = use_bias if centered_norm is None else centered_norm
    ref_out, ref_max_logit = _reference(params, x, mask, parallel, centered)
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(max_logit, ref_max_logit, rtol=1e-5)


@pytest.mark.parametrize("qk_norm", [True, False])
@pytest.mark.parametrize("use_bias", [True, False])
def test_fused_and_unfused_parallel_agree_on_the_same_weights(qk_norm, use_bias):
    switches = dict(parallel=True, qk_norm=qk_norm, use_bias=use_bias)
    unfused = base_layer.instantiate(_config(fused=False, **switches))
    fused = base_layer.instantiate(_config(fused=True, **switches))
    x, paddings, mask = _inputs()
    p_unfused = _perturb(_init(unfused))
    p_fused = _fuse(p_unfused, use_bias)
    # The converted tree has exactly the fused layer's variables and shapes.
    shapes = lambda p: jax.tree_util.tree_map(jnp.shape, p)
    assert shapes(p_fused) == shapes(_init(fused))

    out_u, logit_u = _apply(unfused, p_unfused, x, paddings, mask)
    out_f, logit_f = _apply(fused, p_fused, x, paddings, mask)
    np.testing.assert_allclose(out_f, out_u, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logit_f, logit_u, rtol=1e-5)
    assert not np.allclose(out_u, x, atol=1e-3)  # The block did something.


def test_parallel_has_one_block_layernorm_sequential_two():
    par = _init(base_layer.instantiate(_config(parallel=True)))
    seq = _init(base_layer.instantiate(_config(parallel=False)))
    block_norms = lambda p: sorted(k for k in p if k.endswith("layer_norm"))
    assert block_norms(par) == ["layer_norm"]
    assert block_norms(seq) == ["attention_layer_norm", "mlp_layer_norm"]
    # The sequential block is never fused, whatever `fused` says.
    assert "w_in" not in seq and "w_q" in seq


def test_qk_norm_switch_adds_and_removes_per_head_norms():
    on = _init(base_layer.instantiate(_config(qk_norm=True)))
    off = _init(base_layer.instantiate(_config(qk_norm=False)))
    # One scale of size H for queries and one for keys, shared across heads.
    assert on["query_norm"]["scale"].shape == (H,)
    assert on["key_norm"]["scale"].shape == (H,)
    assert "query_norm" not in off and "key_norm" not in off
    assert set(on) - set(off) == {"query_norm", "key_norm"}


@pytest.mark.parametrize("fused", [True, False])
def test_use_bias_false_keeps_only_mlp_biases(fused):
    nob = _init(base_layer.instantiate(_config(use_bias=False, fused=fused)))
    bias = _init(base_layer.instantiate(_config(use_bias=True, fused=fused)))
    for norm in ("layer_norm", "query_norm", "key_norm"):
        assert set(nob[norm]) == {"scale"}
        assert set(bias[norm]) == {"scale", "bias"}
    if fused:
        # Only the MLP columns of W_in have a bias; the output bias is the MLP-out bias.
        assert nob["b_in"].shape == (M,) and nob["b_out"].shape == (D,)
        assert bias["b_in"].shape == (3 * A + M,) and bias["b_out"].shape == (D,)
        assert nob["w_in"].shape == (D, 3 * A + M) and nob["w_out"].shape == (A + M, D)
    else:
        assert not {"b_q", "b_k", "b_v", "b_o"} & set(nob)
        assert {"b_q", "b_k", "b_v", "b_o"} <= set(bias)
        for p in (nob, bias):
            assert p["b_mlp_in"].shape == (M,) and p["b_mlp_out"].shape == (D,)


@pytest.mark.parametrize("qk_norm", [True, False])
def test_no_bias_norms_are_uncentred_rms_norms(qk_norm):
    """The paper's "LayerNorm without bias and centering": y = x / rms(x) * scale, so unlike a
    LayerNorm it sees a constant shift of the features."""
    x = _inputs()[0]
    shifted = x + 3.0

    def norm(layer, params, inputs, name):
        def fn(module, z):
            return getattr(module, name)(z)

        return layer.apply({"params": params}, inputs, method=fn)

    rms = base_layer.instantiate(_config(use_bias=False, qk_norm=qk_norm))
    params = _perturb(_init(rms))
    scale = 1.0 + params["layer_norm"]["scale"]
    root_mean_square = jnp.sqrt(jnp.mean(shifted**2, axis=-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(
        norm(rms, params, shifted, "layer_norm"), shifted / root_mean_square * scale, rtol=1e-5
    )
    if qk_norm:
        q = jax.random.normal(jax.random.PRNGKey(3), (B, T, N, H)) + 2.0
        q_scale = 1.0 + params["query_norm"]["scale"]
        q_rms = jnp.sqrt(jnp.mean(q**2, axis=-1, keepdims=True) + 1e-6)
        np.testing.assert_allclose(norm(rms, params, q, "query_norm"), q / q_rms * q_scale, 1e-5)
    # A centred LayerNorm is shift-invariant; the RMSNorm is not.
    centred = base_layer.instantiate(_config(use_bias=False, centered_norm=True, qk_norm=qk_norm))
    np.testing.assert_allclose(
        norm(centred, params, shifted, "layer_norm"),
        norm(centred, params, x, "layer_norm"),
        rtol=1e-4,
        atol=1e-5,
    )
    assert not np.allclose(
        norm(rms, params, shifted, "layer_norm"), norm(rms, params, x, "layer_norm"), atol=1e-2
    )
    # Both keep one scale vector and no bias: the same parameters, so ablations line up.
    assert jax.tree_util.tree_map(jnp.shape, _init(centred)) == jax.tree_util.tree_map(
        jnp.shape, params
    )


def _expected_count(d, m, n, h, parallel, qk_norm, use_bias, fused) -> int:
    """The formula written out term by term (independent of the helper in models.vit22b)."""
    a = n * h
    b = 1 if use_bias else 0
    ln = (1 + b) * d * (1 if parallel else 2) + (2 * (1 + b) * h if qk_norm else 0)
    if parallel and fused:
        return ln + d * (3 * a + m) + (3 * a * b + m) + (a + m) * d + d
    qkvo = 3 * d * a + a * d + b * (3 * a + d)
    mlp = d * m + m + m * d + d
    return ln + qkvo + mlp


@pytest.mark.parametrize(("parallel", "qk_norm", "use_bias", "fused"), VARIANTS)
@pytest.mark.parametrize("dim_per_head", [None, 6])
def test_exact_parameter_count(parallel, qk_norm, use_bias, fused, dim_per_head):
    switches = dict(parallel=parallel, qk_norm=qk_norm, use_bias=use_bias, fused=fused)
    layer = base_layer.instantiate(_config(dim_per_head=dim_per_head, **switches))
    x, paddings, mask = _inputs()
    params = layer.init(jax.random.PRNGKey(0), x, paddings, mask)["params"]
    h = dim_per_head or D // N
    expected = _expected_count(D, M, N, h, **switches)
    assert _n_params(params) == expected
    assert vit22b_block_param_count(D, M, N, dim_per_head, **switches) == expected


@pytest.mark.parametrize(("use_bias", "centered_norm"), [(True, False), (False, True)])
def test_parameter_count_when_centring_is_switched_apart_from_bias(use_bias, centered_norm):
    switches = dict(use_bias=use_bias, centered_norm=centered_norm)
    params = _init(base_layer.instantiate(_config(**switches)))
    # Only a centred LayerNorm with use_bias has a norm bias: here no norm has one.
    assert all(set(params[n]) == {"scale"} for n in ("layer_norm", "query_norm", "key_norm"))
    assert _n_params(params) == vit22b_block_param_count(D, M, N, **switches)


def test_parameter_count_of_the_paper_block():
    # ViT-22B: D 6144, M 24576, 48 heads, 48 layers; ~21.7B of its 21.74B are in the blocks.
    per_block = vit22b_block_param_count(6144, 24576, 48)
    assert per_block == 6144 + 2 * 128 + 4 * 6144**2 + 2 * 6144 * 24576 + 24576 + 6144
    assert 21.6e9 < 48 * per_block < 21.75e9


@pytest.mark.parametrize("fused", [True, False])
def test_qk_norm_bounds_max_logit_when_query_key_weights_blow_up(fused):
    x, paddings, mask = _inputs()

    def max_logit_growth(qk_norm: bool) -> float:
        layer = base_layer.instantiate(_config(qk_norm=qk_norm, fused=fused))
        params = _init(layer)
        big = dict(params)
        if fused:
            big["w_in"] = params["w_in"].at[:, : 2 * A].multiply(100.0)
        else:
            big["w_q"], big["w_k"] = 100.0 * params["w_q"], 100.0 * params["w_k"]
        _, before = _apply(layer, params, x, paddings, mask)
        _, after = _apply(layer, big, x, paddings, mask)
        assert before > 0
        return float(after / before)

    # q.k is bilinear in the two weights: without QK-norm the logits grow by exactly 100 * 100.
    assert max_logit_growth(False) == pytest.approx(1e4, rel=1e-3)
    # With it, q and k are renormalised per head, so the scale of the weights drops out.
    assert max_logit_growth(True) == pytest.approx(1.0, abs=0.05)


def _stacked_config(**fields: object) -> pax_fiddle.Config:
    return pax_fiddle.Config(
        transformers.StackedTransformer,
        name="stack",
        num_layers=2,
        model_dims=D,
        hidden_dims=M,
        num_heads=N,
        transformer_layer_params_tpl=pax_fiddle.Config(Vit22bBlock),
        **fields,
    )


def test_stacks_inside_praxis_stacked_transformer():
    stack = base_layer.instantiate(_stacked_config())
    x, paddings, _ = _inputs()
    variables = stack.init(jax.random.PRNGKey(0), x, paddings)
    params = variables["params"]
    assert sorted(params) == ["x_layers_0", "x_layers_1"]
    assert _n_params(params) == 2 * vit22b_block_param_count(D, M, N)

    out, mutated = stack.apply(variables, x, paddings, mutable=[STATS])
    assert out.shape == (B, T, D) and np.all(np.isfinite(out))
    for i in range(2):
        (max_logit,) = mutated[STATS][f"x_layers_{i}"]["max_attention_logit"]
        assert np.isfinite(max_logit) and max_logit.shape == ()

    # StackedTransformer folds paddings into the additive mask: changing padded tokens leaves
    # every real token's output unchanged.
    x_changed = x.at[1, -2:].set(100.0)
    out_changed = stack.apply(variables, x_changed, paddings)
    np.testing.assert_allclose(out_changed[0], out[0], atol=1e-6)
    np.testing.assert_allclose(out_changed[1, :-2], out[1, :-2], rtol=1e-5, atol=1e-5)


def test_dropout_fields_from_stacked_transformer_take_effect_in_training_only():
    stack = base_layer.instantiate(_stacked_config(dropout_prob=0.3, residual_droppath_prob=0.2))
    x, paddings, _ = _inputs()
    variables = stack.init(jax.random.PRNGKey(0), x, paddings)

    def run(seed: int) -> jax.Array:
        return stack.apply(variables, x, paddings, rngs={"random": jax.random.PRNGKey(seed)})

    assert not np.allclose(run(1), run(2))
    eval_hparams = base_layer.JaxContext.HParams(do_eval=True)
    with base_layer.JaxContext.new_context(hparams=eval_hparams):
        eval_out = stack.apply(variables, x, paddings)
    no_dropout = base_layer.instantiate(_stacked_config())
    np.testing.assert_allclose(eval_out, no_dropout.apply(variables, x, paddings), atol=1e-6)


def test_cross_attention_is_rejected_clearly():
    layer = base_layer.instantiate(_config(use_cross_attention=True))
    x, paddings, mask = _inputs()
    with pytest.raises(ValueError, match="use_cross_attention must be False"):
        layer.init(jax.random.PRNGKey(0), x, paddings, mask)


MESH_AXES = ("data", "expert", "model")


@pytest.mark.parametrize("fused", [True, False])
def test_weight_sharding_specs_and_sharded_apply(fused):
    p = _config(fused=fused, mesh_axis_names=MESH_AXES, ici_mesh_shape=[2, 2, 2])
    layer = base_layer.instantiate(p)
    x, paddings, mask = _inputs()
    meta = layer.abstract_init_with_metadata(x, paddings, mask)
    specs = base_layer.var_partition_specs(meta["params"], [2, 2, 2], MESH_AXES)
    if fused:
        assert specs["w_in"] == PartitionSpec(None, "model")
        assert specs["w_out"] == PartitionSpec("model", None)
        assert specs["b_in"] == PartitionSpec("model")
    else:
        for name in ("w_q", "w_k", "w_v", "w_mlp_in"):
            assert specs[name] == PartitionSpec(None, "model"), name
        for name in ("w_o", "w_mlp_out"):
            assert specs[name] == PartitionSpec("model", None), name
    assert specs["layer_norm"]["scale"] == PartitionSpec(None)

    # The sharded layer computes what the unsharded one does, with weights placed by the specs.
    plain = base_layer.instantiate(_config(fused=fused))
    params = _perturb(_init(plain))
    expected, _ = _apply(plain, params, x, paddings, mask)
    mesh = Mesh(np.array(jax.devices()).reshape(2, 2, 2), MESH_AXES)
    placed = jax.tree_util.tree_map(
        lambda v, s: jax.device_put(v, NamedSharding(mesh, s)), params, specs
    )
    assert placed["w_out" if fused else "w_o"].sharding.spec == PartitionSpec("model", None)
    loss = lambda lyr, p: jnp.sum(_apply(lyr, p, x, paddings, mask)[0] ** 2)
    expected_grads = jax.grad(lambda p: loss(plain, p))(params)
    with mesh:
        out = jax.jit(lambda p: _apply(layer, p, x, paddings, mask)[0])(placed)
        grads = jax.jit(jax.grad(lambda p: loss(layer, p)))(placed)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    jax.tree_util.tree_map(
        lambda g, e: np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4), grads, expected_grads
    )
