"""models.moe.layers: SparseMoe (router + experts), and MoeFeedForward in a praxis stack."""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from praxis import base_layer, pax_fiddle
from praxis.layers import transformers

from models.moe.layers import MoeFeedForward, SparseMoe
from models.specs import MoeSpec
from models.stats import STATS, flatten_stats

AUX = base_layer.AUX_LOSS
B, N, D, H, E = 2, 8, 8, 16, 4


ROUTING_FIELDS = {field.name for field in dataclasses.fields(MoeSpec)}


def _routing(**fields: Any) -> MoeSpec:
    return MoeSpec(**{"num_selected_experts": 2, "capacity_factor": 1.0, **fields})


def _config(**overrides: Any) -> pax_fiddle.Config:
    """A SparseMoe config; overrides that name MoeSpec fields go to its routing spec."""
    routing = {k: v for k, v in overrides.items() if k in ROUTING_FIELDS and k != "num_experts"}
    layer = {k: v for k, v in overrides.items() if k not in routing}
    fields = {"name": "moe", "input_dims": D, "hidden_dims": H, "num_experts": E, **layer}
    return pax_fiddle.Config(SparseMoe, spec=_routing(**routing), **fields)


def _inputs(seed: int = 0, shape: tuple[int, ...] = (B, N, D)) -> jax.Array:
    return jax.random.normal(jax.random.PRNGKey(seed), shape)


def _init(layer: base_layer.BaseLayer, *args: Any) -> Any:
    rngs = {"params": jax.random.PRNGKey(1), "random": jax.random.PRNGKey(2)}
    return layer.init(rngs, *args)["params"]


def _apply(
    layer: base_layer.BaseLayer, params: Any, *args: Any, eval_mode: bool = False, seed: int = 3
) -> tuple[jax.Array, dict]:
    """Applies in training or eval mode; returns (output, {STATS:..., AUX_LOSS:...})."""
    context = base_layer.JaxContext.new_context(
        hparams=base_layer.JaxContext.HParams(do_eval=eval_mode)
    )
    with context:
        out, collections = layer.apply(
            {"params": params},
            *args,
            rngs={"random": jax.random.PRNGKey(seed)},
            mutable=[STATS, AUX],
        )
    return out, collections


def _stat(collections: dict, name: str) -> np.ndarray:
    (value,) = collections[STATS][name]
    return np.asarray(value)


def test_shapes_stats_and_finite_gradients() -> None:
    layer = base_layer.instantiate(_config())
    x = _inputs()
    params = _init(layer, x)
    shapes = jax.tree_util.tree_map(jnp.shape, params)
    assert shapes == {
        "router": (D, E),
        "wi": (E, D, H),
        "bi": (E, H),
        "wo": (E, H, D),
        "bo": (E, D),
    }
    y, cols = _apply(layer, params, x)
    assert y.shape == (B, N, D)
    assert _stat(cols, "dropped_fraction").shape == ()
    assert _stat(cols, "unrouted_fraction").shape == ()
    load = _stat(cols, "expert_load")
    assert load.shape == (E,)
    assert load.sum() == pytest.approx(1.0)
    per_image = _stat(cols, "assignments_per_image")
    assert per_image.shape == (B, E)
    np.testing.assert_array_equal(per_image.sum(axis=1), [2 * N] * B)  # k choices per token
    processed = _stat(cols, "processed_fraction_per_image")
    assert processed.shape == (B,)
    assert processed.mean() == pytest.approx(1.0 - float(_stat(cols, "dropped_fraction")))
    assert set(cols[AUX]) == {"importance_loss", "load_loss"}

    def loss(p: Any) -> jax.Array:
        out, c = _apply(layer, p, x)
        aux = sum(v.value for v in c[AUX].values())
        return jnp.mean(out**2) + aux

    grads = jax.grad(loss)(params)
    for name, g in grads.items():
        assert bool(jnp.all(jnp.isfinite(g))), name
    assert float(jnp.abs(grads["router"]).sum()) > 0
    assert float(jnp.abs(grads["wi"]).sum()) > 0


def test_single_expert_equals_dense_gelu_mlp() -> None:
    layer = base_layer.instantiate(
        _config(num_experts=1, num_selected_experts=1, capacity_factor=1.0)
    )
    x = _inputs()
    params = _init(layer, x)
    keys = jax.random.split(jax.random.PRNGKey(7), 2)  # non-zero biases, so they are tested too
    params["bi"] = jax.random.normal(keys[0], params["bi"].shape)
    params["bo"] = jax.random.normal(keys[1], params["bo"].shape)
    wi, bi, wo, bo = (np.asarray(params[n])[0] for n in ("wi", "bi", "wo", "bo"))
    dense = np.asarray(jax.nn.gelu(x @ wi + bi, approximate=True)) @ wo + bo
    for eval_mode in (False, True):
        y, cols = _apply(layer, params, x, eval_mode=eval_mode)
        np.testing.assert_allclose(y, dense, rtol=1e-5, atol=1e-5)
        assert float(_stat(cols, "dropped_fraction")) == 0.0


def test_capacity_limits_and_large_capacity_drops_nothing() -> None:
    x = _inputs(shape=(B, 16, D))
    tight = base_layer.instantiate(_config(capacity_factor=0.25))
    params = _init(tight, x)
    _, cols = _apply(tight, params, x)
    # C = 0.25 leaves room for a quarter of the k * tokens assignments at most.
    assert float(_stat(cols, "dropped_fraction")) >= 0.75 - 1e-6
    assert float(_stat(cols, "unrouted_fraction")) > 0
    roomy = base_layer.instantiate(_config(capacity_factor=E / 2))  # capacity = all tokens
    _, cols = _apply(roomy, params, x)
    assert float(_stat(cols, "dropped_fraction")) == 0.0
    assert float(_stat(cols, "unrouted_fraction")) == 0.0


def test_noise_only_in_training() -> None:
    layer = base_layer.instantiate(_config(capacity_factor=2.0))
    x = _inputs()
    params = _init(layer, x)
    eval_a, _ = _apply(layer, params, x, eval_mode=True, seed=10)
    eval_b, _ = _apply(layer, params, x, eval_mode=True, seed=11)
    np.testing.assert_array_equal(eval_a, eval_b)
    train_a, _ = _apply(layer, params, x, seed=10)
    train_a2, _ = _apply(layer, params, x, seed=10)
    train_b, _ = _apply(layer, params, x, seed=11)
    np.testing.assert_array_equal(train_a, train_a2)
    assert not np.allclose(train_a, train_b)
    assert not np.allclose(train_a, eval_a)


def test_aux_losses_weighted_in_training_only() -> None:
    layer = base_layer.instantiate(_config())
    x = _inputs()
    params = _init(layer, x)
    _, cols = _apply(layer, params, x)
    for name in ("importance_loss", "load_loss"):
        unweighted = float(_stat(cols, name))
        assert unweighted > 0
        assert float(cols[AUX][name].value) == pytest.approx(0.005 * unweighted)
    _, cols = _apply(layer, params, x, eval_mode=True)
    assert not cols.get(AUX)
    assert float(_stat(cols, "importance_loss")) > 0

    switch = base_layer.instantiate(_config(aux_loss="switch"))
    _, cols = _apply(switch, params, x)
    assert set(cols[AUX]) == {"switch_loss"}
    assert float(cols[AUX]["switch_loss"].value) == pytest.approx(
        0.01 * float(_stat(cols, "switch_loss"))
    )
    assert "importance_loss" not in cols[STATS]


def test_eval_k_and_capacity_change_routing_on_the_same_parameters() -> None:
    x = _inputs(shape=(B, 16, D))
    train_layer = base_layer.instantiate(_config(capacity_factor=1.0))
    params = _init(train_layer, x)
    before = jax.tree_util.tree_map(np.array, params)

    def eval_stats(**eval_fields: Any) -> dict:
        layer = base_layer.instantiate(_config(capacity_factor=1.0, **eval_fields))
        # Same parameter tree: eval settings add or reshape no variables.
        assert jax.tree_util.tree_structure(_init(layer, x)) == jax.tree_util.tree_structure(params)
        _, cols = _apply(layer, params, x, eval_mode=True)
        return cols

    low_c = eval_stats(eval_capacity_factor=0.25)
    high_c = eval_stats(eval_capacity_factor=E / 2)
    assert float(_stat(low_c, "dropped_fraction")) > 0.5
    assert float(_stat(high_c, "dropped_fraction")) == 0.0
    k1 = eval_stats(eval_num_selected_experts=1, eval_capacity_factor=float(E))
    np.testing.assert_array_equal(_stat(k1, "assignments_per_image").sum(axis=1), [16] * B)
    k2 = eval_stats(eval_capacity_factor=E / 2)
    np.testing.assert_array_equal(_stat(k2, "assignments_per_image").sum(axis=1), [32] * B)
    # BPR at eval changes which tokens survive a tight capacity, not how many.
    vanilla = eval_stats(eval_capacity_factor=0.5)
    bpr = eval_stats(eval_capacity_factor=0.5, eval_batch_priority=True)
    assert float(_stat(bpr, "dropped_fraction")) == pytest.approx(
        float(_stat(vanilla, "dropped_fraction"))
    )
    # Training-mode routing is untouched by the eval fields.
    train_cols = _apply(train_layer, params, x)[1]
    low_train = _apply(base_layer.instantiate(_config(eval_capacity_factor=0.25)), params, x)[1]
    assert float(_stat(low_train, "dropped_fraction")) == float(
        _stat(train_cols, "dropped_fraction")
    )
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, before)


def test_bpr_layer_drops_lowest_priority_tokens() -> None:
    # k=1 and one group: BPR keeps each expert's highest-gate tokens, vanilla its earliest ones.
    x = _inputs(shape=(1, 16, D))
    layer = base_layer.instantiate(
        _config(num_selected_experts=1, capacity_factor=0.5, batch_priority=True)
    )
    params = _init(layer, x)
    params["router"] = 2.0 * jax.random.normal(jax.random.PRNGKey(5), params["router"].shape)
    y, _ = _apply(layer, params, x, eval_mode=True)
    gates = np.asarray(jax.nn.softmax(x[0] @ params["router"]))
    choice, priority = gates.argmax(-1), gates.max(-1)
    capacity = 2  # ceil(1 * 16 * 0.5 / 4)
    kept = np.abs(np.asarray(y[0])).sum(-1) > 0
    for e in range(E):
        chose = np.flatnonzero(choice == e)
        best = chose[np.argsort(-priority[chose], kind="stable")][:capacity]
        np.testing.assert_array_equal(np.flatnonzero(kept & (choice == e)), np.sort(best))
    vanilla = base_layer.instantiate(_config(num_selected_experts=1, capacity_factor=0.5))
    y, _ = _apply(vanilla, params, x, eval_mode=True)
    kept = np.abs(np.asarray(y[0])).sum(-1) > 0
    for e in range(E):
        np.testing.assert_array_equal(
            np.flatnonzero(kept & (choice == e)), np.flatnonzero(choice == e)[:capacity]
        )


def test_group_images_routes_whole_images_together() -> None:
    x = _inputs(shape=(4, 4, D))
    # With C = E / k every expert can hold every token of its group: nothing is dropped.
    layer = base_layer.instantiate(_config(group_images=2, capacity_factor=E / 2))
    params = _init(layer, x)
    y, cols = _apply(layer, params, x)
    assert y.shape == (4, 4, D)
    assert _stat(cols, "assignments_per_image").shape == (4, E)
    np.testing.assert_array_equal(_stat(cols, "processed_fraction_per_image"), np.ones(4))
    # Routing a group of two images is routing their concatenated tokens as one image.
    pair = base_layer.instantiate(_config(capacity_factor=E / 2))
    y_pair, _ = _apply(pair, params, x.reshape(2, 8, D), eval_mode=True)
    y_group, _ = _apply(layer, params, x, eval_mode=True)
    np.testing.assert_allclose(y_group, y_pair.reshape(4, 4, D), rtol=1e-6)
    bad = base_layer.instantiate(_config(group_images=3))
    with pytest.raises(ValueError, match=r"MoeSpec.group_images=3 does not divide the batch of 4"):
        _apply(bad, params, x)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"num_selected_experts": 5}, r"num_selected_experts k=5 exceeds num_experts E=4"),
        ({"num_selected_experts": 0}, r"num_selected_experts k=0 must be >= 1"),
        ({"capacity_factor": 0.0}, r"capacity_factor C=0.0 must be > 0"),
        ({"eval_num_selected_experts": 6}, r"num_selected_experts k=6 exceeds num_experts E=4"),
        ({"eval_capacity_factor": -1.0}, r"capacity_factor C=-1.0 must be > 0"),
        (
            {"dispatch": "scatter"},
            r"dispatch='scatter' is not supported; use one of "
            r"\['all_to_all', 'auto', 'einsum', 'gather'\]",
        ),
        ({"aux_loss": "gshard"}, r"aux_loss='gshard' is not supported"),
        ({"noise_std": 0.0}, r"noise_std=0.0 is invalid for aux_loss='vmoe'"),
    ],
)
def test_bad_settings_fail_at_setup(fields: dict, message: str) -> None:
    layer = base_layer.instantiate(_config(**fields))
    with pytest.raises(ValueError, match=message):
        _init(layer, _inputs())


def _stacked_config(**overrides: Any) -> pax_fiddle.Config:
    moe = pax_fiddle.Config(
        MoeFeedForward,
        moe_tpl=pax_fiddle.Config(SparseMoe, spec=_routing(capacity_factor=1.05)),
    )
    fields = dict(
        name="encoder",
        num_layers=2,
        model_dims=D,
        hidden_dims=H,
        num_heads=2,
        num_experts=E,
        moe_layers=[1],
        moe_layer_tpl=moe,
    )
    fields.update(overrides)
    return pax_fiddle.Config(transformers.StackedTransformer, **fields)


def test_moe_feed_forward_in_stacked_transformer() -> None:
    layer = base_layer.instantiate(_stacked_config())
    x = _inputs()
    paddings = jnp.zeros((B, N))
    params = _init(layer, x, paddings)
    moe_params = params["x_layers_1"]["ff_layer"]
    assert set(moe_params) == {"layer_norm", "moe"}
    assert moe_params["moe"]["wi"].shape == (E, D, H)
    assert "moe" not in params["x_layers_0"]["ff_layer"]

    y, cols = _apply(layer, params, x, paddings)
    assert y.shape == (B, N, D)
    assert bool(jnp.all(jnp.isfinite(y)))
    aux = cols[AUX]["x_layers_1"]["ff_layer"]["moe"]
    assert set(aux) == {"importance_loss", "load_loss"}
    stats = flatten_stats(cols[STATS])
    prefix = "x_layers_1/ff_layer/moe/"
    names = ("dropped_fraction", "unrouted_fraction", "expert_load", "assignments_per_image")
    for name in (*names, "processed_fraction_per_image"):
        assert prefix + name in stats
    assert not any(k.startswith("x_layers_0") for k in stats)
    assert float(aux["load_loss"].value) == pytest.approx(
        0.005 * float(stats[prefix + "load_loss"])
    )


def test_moe_feed_forward_is_pre_ln_residual() -> None:
    ff = base_layer.instantiate(
        pax_fiddle.Config(
            MoeFeedForward,
            name="ff",
            input_dims=D,
            hidden_dims=H,
            num_experts=E,
            moe_tpl=pax_fiddle.Config(
                SparseMoe, spec=_routing(num_selected_experts=1, capacity_factor=2.0)
            ),
        )
    )
    x = 3.0 * _inputs() + 1.0
    params = _init(ff, x)
    y, _ = _apply(ff, params, x, eval_mode=True)
    normed = (x - x.mean(-1, keepdims=True)) / jnp.sqrt(x.var(-1, keepdims=True) + 1e-6)
    moe = base_layer.instantiate(
        _config(num_selected_experts=1, capacity_factor=2.0, hidden_dims=H)
    )
    expected, _ = _apply(moe, params["moe"], normed, eval_mode=True)
    np.testing.assert_allclose(y, x + expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"norm_policy='post' is not supported"):
        bad = base_layer.instantiate(
            pax_fiddle.Config(
                MoeFeedForward,
                name="ff",
                input_dims=D,
                hidden_dims=H,
                num_experts=E,
                norm_policy="post",
            )
        )
        _init(bad, x)


def test_expert_weights_shard_over_expert_and_model_axes() -> None:
    axes = ("data", "expert", "model")
    layer = base_layer.instantiate(_config(mesh_axis_names=axes, ici_mesh_shape=[2, 2, 2]))
    x = _inputs(shape=(8, N, D))
    specs = base_layer.var_partition_specs(
        layer.abstract_init_with_metadata(x)["params"],
        mesh_shape=[2, 2, 2],
        device_axis_names=list(axes),
    )
    assert specs["wi"] == PartitionSpec("expert", None, "model")
    assert specs["bi"] == PartitionSpec("expert", "model")
    assert specs["wo"] == PartitionSpec("expert", "model", None)
    assert specs["bo"] == PartitionSpec("expert", None)
    assert specs["router"] == PartitionSpec(None, None)

    # The same layer runs sharded under jit, with its activation constraints, and matches the
    # unsharded result.
    params = _init(layer, x)
    mesh = Mesh(np.array(jax.devices()).reshape(2, 2, 2), axes)
    shardings = jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), specs)
    sharded = jax.device_put(params, shardings)
    assert sharded["wi"].sharding.shard_shape(sharded["wi"].shape) == (E // 2, D, H // 2)

    def forward(p: Any, inputs: jax.Array) -> jax.Array:
        return _apply(layer, p, inputs, eval_mode=True)[0]

    with mesh:
        y = jax.jit(forward)(
            sharded, jax.device_put(x, NamedSharding(mesh, PartitionSpec(axes[:2])))
        )
    np.testing.assert_allclose(y, forward(params, x), rtol=1e-5, atol=1e-5)

    # A mesh without an 'expert' axis just leaves experts replicated.
    dense_axes = ("data", "model")
    dense = base_layer.instantiate(_config(mesh_axis_names=dense_axes, ici_mesh_shape=[2, 4]))
    specs = base_layer.var_partition_specs(
        dense.abstract_init_with_metadata(x)["params"], [2, 4], list(dense_axes)
    )
    assert specs["wi"] == PartitionSpec(None, None, "model")


def test_moe_feed_forward_dropouts_act_in_training_only() -> None:
    ff = base_layer.instantiate(
        pax_fiddle.Config(
            MoeFeedForward,
            name="ff",
            input_dims=D,
            hidden_dims=H,
            num_experts=E,
            relu_dropout_prob=0.3,
            residual_dropout_prob=0.3,
            residual_droppath_prob=0.3,
        )
    )
    x = _inputs()
    params = _init(ff, x)
    eval_a, _ = _apply(ff, params, x, eval_mode=True, seed=1)
    eval_b, _ = _apply(ff, params, x, eval_mode=True, seed=2)
    np.testing.assert_array_equal(eval_a, eval_b)
    train_a, _ = _apply(ff, params, x, seed=1)
    train_b, _ = _apply(ff, params, x, seed=2)
    assert bool(jnp.all(jnp.isfinite(train_a)))
    assert not np.allclose(train_a, train_b)


@pytest.mark.parametrize("batch_priority", [False, True])
@pytest.mark.parametrize("k, capacity_factor", [(1, 1.0), (2, 0.5), (2, 2.0)])
def test_gather_dispatch_matches_einsum_outputs_and_gradients(
    k: int, capacity_factor: float, batch_priority: bool
) -> None:
    """Same parameters, same noise: both dispatches give the same outputs, stats and
    gradients for every weight (router included) and for the inputs, with drops and without."""
    fields = dict(
        num_selected_experts=k, capacity_factor=capacity_factor, batch_priority=batch_priority
    )
    einsum = base_layer.instantiate(_config(dispatch="einsum", **fields))
    gather = base_layer.instantiate(_config(dispatch="gather", **fields))
    x = _inputs(shape=(4, N, D))
    params = _init(einsum, x)

    def loss(layer):
        def fn(p, inputs):
            y, cols = _apply(layer, p, inputs)
            return jnp.sum(jnp.sin(y)) + sum(a.value for a in cols[AUX].values()), cols

        return jax.value_and_grad(fn, argnums=(0, 1), has_aux=True)

    (want, want_cols), want_grads = loss(einsum)(params, x)
    (got, got_cols), got_grads = loss(gather)(params, x)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for name in (
        "dropped_fraction",
        "expert_load",
        "assignments_per_image",
        "processed_fraction_per_image",
    ):
        np.testing.assert_allclose(_stat(got_cols, name), _stat(want_cols, name))
    if capacity_factor < 1:
        assert _stat(got_cols, "dropped_fraction") > 0
    jax.tree_util.tree_map(
        lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6), got_grads, want_grads
    )
    assert float(jnp.abs(got_grads[0]["router"]).sum()) > 0


def test_gather_dispatch_runs_sharded_over_experts() -> None:
    axes = ("data", "expert", "model")
    fields = dict(mesh_axis_names=axes, ici_mesh_shape=[2, 4, 1], capacity_factor=0.5)
    layer = base_layer.instantiate(_config(dispatch="gather", **fields))
    reference = base_layer.instantiate(_config(dispatch="einsum", **fields))
    x = _inputs(shape=(8, N, D))
    params = _init(layer, x)
    specs = base_layer.var_partition_specs(
        layer.abstract_init_with_metadata(x)["params"], [2, 4, 1], list(axes)
    )
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4, 1), axes)
    shardings = jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), specs)
    sharded = jax.device_put(params, shardings)

    def grads(layer, p, inputs):
        return jax.grad(lambda p: jnp.sum(_apply(layer, p, inputs)[0] ** 2))(p)

    with mesh:
        inputs = jax.device_put(x, NamedSharding(mesh, PartitionSpec(axes[:2])))
        step = jax.jit(lambda p, i: grads(layer, p, i), out_shardings=shardings)
        got = step(sharded, inputs)
    assert got["wi"].sharding.shard_shape(got["wi"].shape)[0] == E // 4
    want = grads(reference, params, x)
    jax.tree_util.tree_map(
        lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6), got, want
    )
