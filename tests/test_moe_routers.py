"""The routers of SparseMoe beyond plain top-k: clean-gate importance, routing groups of several
images (per-image compute), Expert Choice and Soft MoE, at tiny sizes."""

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from praxis import base_layer, pax_fiddle

from models.moe import expert_choice, routing, soft_routing
from models.moe.layers import SparseMoe
from models.specs import MoeSpec, moe_layer_indices
from models.stats import STATS

AUX = base_layer.AUX_LOSS
D, H, E = 8, 16, 4


def _layer(**spec_fields: Any) -> SparseMoe:
    spec = MoeSpec(**{"num_experts": E, "capacity_factor": 1.0, **spec_fields})
    config = pax_fiddle.Config(
        SparseMoe, name="moe", input_dims=D, hidden_dims=H, num_experts=E, spec=spec
    )
    return base_layer.instantiate(config)


def _inputs(shape: tuple[int, ...], seed: int = 0) -> jax.Array:
    return jax.random.normal(jax.random.PRNGKey(seed), shape)


def _init(layer: SparseMoe, x: jax.Array) -> Any:
    rngs = {"params": jax.random.PRNGKey(1), "random": jax.random.PRNGKey(2)}
    return layer.init(rngs, x)["params"]


def _apply(layer: SparseMoe, params: Any, x: jax.Array, eval_mode: bool = False) -> tuple:
    context = base_layer.JaxContext.new_context(
        hparams=base_layer.JaxContext.HParams(do_eval=eval_mode)
    )
    with context:
        return layer.apply(
            {"params": params}, x, rngs={"random": jax.random.PRNGKey(3)}, mutable=[STATS, AUX]
        )


def _stat(collections: dict, name: str) -> np.ndarray:
    (value,) = collections[STATS][name]
    return np.asarray(value)


def _expert_mlp(params: Any, e: int, x: jax.Array) -> jax.Array:
    hidden = jax.nn.gelu(x @ params["wi"][e] + params["bi"][e], approximate=True)
    return hidden @ params["wo"][e] + params["bo"][e]


# ---------------------------------------------------------------------------------------------
# Importance loss.


def test_importance_loss_uses_the_clean_gates_even_under_huge_noise() -> None:
    x = _inputs((2, 8, D))
    layer = _layer(noise_std=100.0)
    params = _init(layer, x)
    params["router"] = jax.random.normal(jax.random.PRNGKey(4), params["router"].shape)
    _, cols = _apply(layer, params, x)
    clean_gates = jax.nn.softmax(x @ params["router"], axis=-1)  # one group per image
    want = float(routing.importance_loss(clean_gates))
    assert float(_stat(cols, "importance_loss")) == pytest.approx(want, rel=1e-5)
    assert float(cols[AUX]["importance_loss"].value) == pytest.approx(0.005 * want, rel=1e-5)
    # A zero router gives uniform clean gates, so importance is perfectly balanced (loss 0)
    # however much noise routing sees; the noisy gates (nearly one-hot at std 100) are not.
    params["router"] = jnp.zeros_like(params["router"])
    _, cols = _apply(layer, params, x)
    assert float(_stat(cols, "importance_loss")) == pytest.approx(0.0, abs=1e-9)
    noisy = jax.nn.softmax(100.0 * _inputs((2, 8, E), 9), axis=-1)
    assert float(routing.importance_loss(noisy)) > 0.1


# ---------------------------------------------------------------------------------------------
# Routing groups of several images.


def _confident_and_unsure_images(images: int) -> jax.Array:
    """Even images have large tokens (sharp router softmax, high BPR priority), odd ones small."""
    scale = jnp.where(jnp.arange(images) % 2 == 0, 8.0, 0.1)[:, None, None]
    return _inputs((images, 6, D), seed=5) * scale


def test_bpr_over_groups_of_images_gives_uneven_per_image_compute() -> None:
    # k = E: every token selects every expert, so in a one-image group each expert is
    # oversubscribed (6 choices > capacity ceil(E * 6 * C / E) = 1) and fills up: every image
    # keeps exactly E of its 6 * E choices, whatever the order. In a group of four images BPR
    # ranks all their tokens together, and the confident images' tokens take most slots.
    x = _confident_and_unsure_images(8)
    fields = {"num_selected_experts": E, "capacity_factor": 1 / 6}
    params = _init(_layer(**fields), x)
    params["router"] = jax.random.normal(jax.random.PRNGKey(6), params["router"].shape)

    def per_image(**more: Any) -> np.ndarray:
        _, cols = _apply(_layer(**fields, **more), params, x, eval_mode=True)
        fraction = _stat(cols, "processed_fraction_per_image")
        assert fraction.mean() == pytest.approx(1.0 - float(_stat(cols, "dropped_fraction")))
        return fraction

    for batch_priority in (False, True):
        alone = per_image(group_images=1, batch_priority=batch_priority)
        np.testing.assert_allclose(alone, np.full(8, E / (6 * E)), rtol=1e-6)
    grouped = per_image(group_images=4, batch_priority=True)
    assert grouped.mean() == pytest.approx(1 / 6, rel=1e-6)  # the same total compute ...
    assert grouped.std() > 0.05  # ... spent unevenly: confident images keep more tokens
    assert grouped[0::2].min() > grouped[1::2].max()


# ---------------------------------------------------------------------------------------------
# Expert Choice.


def test_expert_choice_fills_every_expert_exactly_with_its_top_tokens() -> None:
    gates = jax.nn.softmax(2.0 * _inputs((3, 10, E)), axis=-1)
    capacity = 4
    choice = expert_choice.expert_choice_assignments(gates, capacity)
    taken = np.asarray(choice.taken(10))
    np.testing.assert_array_equal(taken.sum(axis=1), np.full((3, E), capacity))
    for g in range(3):
        for e in range(E):
            best = np.argsort(-np.asarray(gates)[g, :, e], kind="stable")[:capacity]
            np.testing.assert_array_equal(np.flatnonzero(taken[g, :, e]), np.sort(best))
    # A token's combine weights are its gates for the experts that took it, 0 elsewhere.
    np.testing.assert_allclose(choice.combine_weights(10), taken * np.asarray(gates), rtol=1e-6)
    assert expert_choice.expert_choice_capacity(10, 25) == 10


def test_expert_choice_layer_matches_hand_computation() -> None:
    x = _inputs((2, 8, D))
    layer = _layer(router="expert_choice", num_selected_experts=1, capacity_factor=1.0)
    params = _init(layer, x)
    params["router"] = jax.random.normal(jax.random.PRNGKey(4), params["router"].shape)
    y, cols = _apply(layer, params, x, eval_mode=True)
    gates = np.asarray(jax.nn.softmax(x @ params["router"], axis=-1))
    capacity = 2  # ceil(1 * 8 * 1.0 / 4)
    want = np.zeros((2, 8, D))
    taken = np.zeros((2, 8, E))
    for b in range(2):
        for e in range(E):
            for s in np.argsort(-gates[b, :, e], kind="stable")[:capacity]:
                want[b, s] += gates[b, s, e] * np.asarray(_expert_mlp(params, e, x[b, s]))
                taken[b, s, e] = 1
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    unrouted = 1.0 - taken.max(axis=-1).mean()
    assert float(_stat(cols, "dropped_fraction")) == pytest.approx(unrouted)
    assert float(_stat(cols, "unrouted_fraction")) == pytest.approx(unrouted)
    np.testing.assert_allclose(_stat(cols, "expert_load"), np.full(E, 1 / E))
    np.testing.assert_array_equal(_stat(cols, "assignments_per_image"), taken.sum(axis=1))
    np.testing.assert_allclose(
        _stat(cols, "processed_fraction_per_image"), taken.max(axis=-1).mean(axis=1)
    )
    _, train_cols = _apply(layer, params, x)
    assert not train_cols.get(AUX)  # balanced by construction: no aux loss


# ---------------------------------------------------------------------------------------------
# Soft MoE.


def test_soft_weights_are_convex_combinations_and_scale_free_in_x() -> None:
    x = _inputs((2, 6, D))
    phi = _inputs((D, E, 2), seed=1)
    weights = soft_routing.soft_weights(x, phi, jnp.asarray(3.0))
    assert weights.dispatch.shape == (2, 6, E, 2)
    np.testing.assert_allclose(weights.dispatch.sum(axis=1), np.ones((2, E, 2)), rtol=1e-6)
    np.testing.assert_allclose(weights.combine.sum(axis=(2, 3)), np.ones((2, 6)), rtol=1e-6)
    # X and Phi are l2-normalised over d: rescaling either leaves the weights unchanged.
    rescaled = soft_routing.soft_weights(5.0 * x, 0.1 * phi, jnp.asarray(3.0))
    np.testing.assert_allclose(rescaled.dispatch, weights.dispatch, rtol=1e-4)
    sharper = soft_routing.soft_weights(x, phi, jnp.asarray(30.0))
    assert float(sharper.combine.max()) > float(weights.combine.max())


def test_soft_layer_is_permutation_equivariant_drops_nothing_and_trains() -> None:
    x = _inputs((2, 6, D))
    layer = _layer(router="soft", slots_per_expert=2)
    params = _init(layer, x)
    assert params["router"].shape == (D, E, 2) and params["router_scale"].shape == (1,)
    y, cols = _apply(layer, params, x)
    permutation = jnp.array([3, 0, 5, 1, 4, 2])
    y_permuted, _ = _apply(layer, params, x[:, permutation])
    np.testing.assert_allclose(y_permuted, y[:, permutation], rtol=1e-5, atol=1e-6)
    assert float(_stat(cols, "dropped_fraction")) == 0.0
    assert float(_stat(cols, "unrouted_fraction")) == 0.0
    np.testing.assert_array_equal(_stat(cols, "processed_fraction_per_image"), np.ones(2))
    assert _stat(cols, "expert_load").sum() == pytest.approx(1.0)
    np.testing.assert_allclose(_stat(cols, "assignments_per_image").sum(axis=1), [6, 6], 1e-5)
    assert not cols.get(AUX)

    # By hand: slots are dispatch-weighted token sums, tokens combine the slot outputs.
    w = soft_routing.soft_weights(x, params["router"], params["router_scale"][0])
    slots = jnp.einsum("gsep,gsd->egpd", w.dispatch, x)
    outs = jnp.stack([_expert_mlp(params, e, slots[e]) for e in range(E)])
    np.testing.assert_allclose(y, jnp.einsum("gsep,egpd->gsd", w.combine, outs), rtol=1e-5)

    grads = jax.grad(lambda p: jnp.sum(jnp.sin(_apply(layer, p, x)[0])))(params)
    for name, g in grads.items():
        assert bool(jnp.all(jnp.isfinite(g))), name
        assert float(jnp.abs(g).sum()) > 0, name


# ---------------------------------------------------------------------------------------------
# Settings.


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"router": "hash"}, r"MoeSpec.router='hash' is unknown; use one of"),
        ({"group_images": 0}, r"MoeSpec.group_images=0 must be >= 1"),
        ({"slots_per_expert": 0}, r"MoeSpec.slots_per_expert=0 must be >= 1"),
    ],
)
def test_bad_router_settings_name_the_field(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        MoeSpec(**fields)
    assert re.search(message, str(info.value).splitlines()[0])  # gin may append a trailer


def test_tail_placement_is_the_last_n_blocks() -> None:
    assert moe_layer_indices("tail_6", 12) == [6, 7, 8, 9, 10, 11]
    assert moe_layer_indices("tail_12", 24) == list(range(12, 24))
    with pytest.raises(ValueError, match=r"placement='tail_13'.*only 12 blocks"):
        moe_layer_indices("tail_13", 12)


@pytest.mark.parametrize("router", ["expert_choice", "soft"])
def test_new_routers_run_sharded_over_experts(router: str) -> None:
    """Experts on the 'expert' axis, groups on 'data': the same outputs as on one device."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    axes = ("data", "expert", "model")
    spec = MoeSpec(num_experts=E, router=router, capacity_factor=1.0)
    config = pax_fiddle.Config(
        SparseMoe,
        name="moe",
        input_dims=D,
        hidden_dims=H,
        num_experts=E,
        spec=spec,
        mesh_axis_names=axes,
        ici_mesh_shape=[2, 4, 1],
    )
    layer = base_layer.instantiate(config)
    x = _inputs((8, 6, D))
    params = _init(layer, x)
    specs = base_layer.var_partition_specs(
        layer.abstract_init_with_metadata(x)["params"], [2, 4, 1], list(axes)
    )
    assert specs["wi"] == PartitionSpec("expert", None, "model")
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4, 1), axes)
    sharded = jax.device_put(
        params, jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), specs)
    )

    def forward(p: Any, inputs: jax.Array) -> jax.Array:
        return _apply(layer, p, inputs, eval_mode=True)[0]

    with mesh:
        inputs = jax.device_put(x, NamedSharding(mesh, PartitionSpec(axes[:2])))
        y = jax.jit(forward)(sharded, inputs)
    np.testing.assert_allclose(y, forward(params, x), rtol=1e-5, atol=1e-6)
