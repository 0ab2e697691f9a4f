"""Every family through the classifier shell: shapes, gradients, sharing and routing settings."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from praxis import base_layer

from harness.measure import params_flops
from harness.runtime.steps import apply_model
from models import builders, specs
from models.stats import STATS, per_block

TINY = specs.VitSpec(
    image_size=16,
    patch_size=4,
    num_channels=1,
    num_classes=5,
    model_dims=32,
    num_layers=4,
    mlp_dims=64,
    num_heads=4,
)
TINY_MOE = specs.MoeSpec(num_experts=4, num_selected_experts=2, capacity_factor=1.0)


def _spec(family: str, **vit_overrides) -> specs.ModelSpec:
    return specs.ModelSpec(
        family=family, vit=dataclasses.replace(TINY, **vit_overrides), moe=TINY_MOE
    )


def _init(spec: specs.ModelSpec):
    model = base_layer.instantiate(builders.build_model(spec))
    images = jax.random.normal(jax.random.PRNGKey(0), (3, 16, 16, 1))
    rngs = {base_layer.PARAMS: jax.random.PRNGKey(1), base_layer.RANDOM: jax.random.PRNGKey(2)}
    return model, model.init(rngs, images)[base_layer.PARAMS], images


@pytest.mark.parametrize("family", specs.FAMILIES)
def test_every_family_maps_images_to_logits_with_finite_gradients(family):
    model, params, images = _init(_spec(family))
    labels = jnp.array([0, 3, 4])

    def loss(p):
        logits, _ = apply_model(model, p, images, jax.random.PRNGKey(3))
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(3), labels])

    logits, _ = apply_model(model, params, images, None)
    assert logits.shape == (3, 5)
    grads = jax.grad(loss)(params)
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    assert all(bool(jnp.all(jnp.isfinite(g))) for _, g in flat)
    nonzero = {jax.tree_util.keystr(path) for path, g in flat if float(jnp.abs(g).max()) > 0}
    if family in ("vmoe", "widenet"):
        routers = [p for p in nonzero if "router" in p]
        assert routers, "the router learns through the combine weights"


def test_widenet_shares_attention_and_moe_and_grows_only_by_layernorms():
    counts = {}
    for depth in (2, 4, 8):
        spec = _spec("widenet", num_layers=depth)
        variables = params_flops.abstract_variables(builders.build_model(spec), spec)
        counts[depth] = params_flops.count_params(variables, spec).total
        encoder = variables["encoder"]
        assert set(encoder) == {"attention", "moe"} | {
            f"{kind}_{i}" for kind in ("attention_norms", "moe_norms") for i in range(depth)
        }
    two_layernorms = 2 * (2 * TINY.model_dims)  # scale and bias, attention and MoE
    assert counts[4] - counts[2] == 2 * two_layernorms
    assert counts[8] - counts[4] == 4 * two_layernorms


def test_widenet_routes_once_per_block_through_the_shared_moe():
    model, params, images = _init(_spec("widenet"))
    _, collections = apply_model(model, params, images, None)
    dropped = per_block(collections[STATS], "dropped_fraction")
    assert sorted(dropped) == [f"block_{i:02d}" for i in range(TINY.num_layers)]


def test_vmoe_routes_in_every_second_block():
    model, params, images = _init(_spec("vmoe"))
    _, collections = apply_model(model, params, images, None)
    assert sorted(per_block(collections[STATS], "dropped_fraction")) == ["block_01", "block_03"]


def test_eval_routing_is_set_at_inference_on_the_same_parameters():
    """A trained V-MoE re-evaluated with other k/C: the same weights, other routed tokens."""
    spec = _spec("vmoe")
    _, params, images = _init(spec)
    low_capacity = dataclasses.replace(
        spec, moe=dataclasses.replace(spec.moe, eval_capacity_factor=0.25)
    )
    top1 = dataclasses.replace(spec, moe=dataclasses.replace(spec.moe, eval_num_selected_experts=1))
    dropped, selections = {}, {}
    for name, variant in {"base": spec, "low_c": low_capacity, "k1": top1}.items():
        variant_model = base_layer.instantiate(builders.build_model(variant))
        _, collections = apply_model(variant_model, params, images, None)
        stats = per_block(collections[STATS], "dropped_fraction")
        dropped[name] = np.mean([float(v) for v in stats.values()])
        chosen = per_block(collections[STATS], "assignments_per_image")
        selections[name] = sum(float(jnp.sum(v)) for v in chosen.values())
    assert dropped["low_c"] > dropped["base"] + 0.3
    tokens = 3 * ((16 // 4) ** 2 + 1)  # images x (patches + class token), per MoE block
    assert selections["base"] == 2 * 2 * tokens  # 2 MoE blocks, k=2
    assert selections["k1"] == 2 * 1 * tokens  # same weights, k=1 at inference
    params_after = jax.tree_util.tree_leaves(params)
    assert all(np.isfinite(np.asarray(p)).all() for p in params_after)
    assert params_flops.count_params(
        params_flops.abstract_variables(builders.build_model(low_capacity), low_capacity), spec
    ) == params_flops.count_params(
        params_flops.abstract_variables(builders.build_model(spec), spec), spec
    )


def test_active_params_count_k_of_e_experts():
    spec = _spec("vmoe")
    counts = params_flops.count_params(
        params_flops.abstract_variables(builders.build_model(spec), spec), spec
    )
    d, m, e, k = TINY.model_dims, TINY.mlp_dims, TINY_MOE.num_experts, 2
    per_expert = 2 * d * m + m + d
    assert counts.total - counts.active == 2 * (e - k) * per_expert  # 2 MoE blocks
    assert math.isclose(counts.total - counts.body, d * 5 + 5)
