"""A new router is one module and one registration (models/moe/router_registry.py).

This file is that module: a round-robin router with no weights (token t of a group goes to
expert t mod E with weight 1, nothing dropped), registered under 'round_robin' for the test.
It then runs inside SparseMoe, is accepted by MoeSpec, and is counted by the FLOPs model, with
no other file changed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from praxis import base_layer, pax_fiddle

from harness.measure import params_flops
from models.moe import router_registry
from models.moe.layers import RoutingReport, SparseMoe
from models.specs import ModelSpec, MoeSpec, VitSpec
from models.stats import STATS

D, H, E = 8, 16, 4


def create_weights(layer: SparseMoe) -> None:
    """A fixed router learns nothing."""


def route(layer: SparseMoe, x: jax.Array) -> tuple[jax.Array, RoutingReport]:
    """Token t of each group to expert t mod E: buffers [E, G, ceil(S/E), D] by reshaping."""
    groups, tokens, dims = x.shape
    capacity = -(-tokens // E)
    padded = jnp.pad(x, ((0, 0), (0, capacity * E - tokens), (0, 0)))
    buffers = padded.reshape(groups, capacity, E, dims).transpose(2, 0, 1, 3)
    out = layer._experts(buffers).transpose(1, 2, 0, 3).reshape(groups, capacity * E, dims)
    one_hot = jax.nn.one_hot(jnp.arange(tokens) % E, E)
    every_token = jnp.ones((groups, tokens), jnp.float32)
    report = RoutingReport(
        dropped_fraction=jnp.zeros((), jnp.float32),
        per_expert=jnp.broadcast_to(one_hot, (groups, tokens, E)),
        processed=every_token,
        routed=every_token,
        router_entropy=jnp.zeros((), jnp.float32),  # one expert per token, with certainty
    )
    return out[:, :tokens], report


@pytest.fixture
def round_robin(monkeypatch):
    """The one registration a new router needs (here undone after the test)."""
    entry = router_registry.RouterEntry(
        module=__name__, uses=(), expert_passes=lambda spec, group_tokens: 1.0
    )
    monkeypatch.setitem(router_registry.ROUTERS, "round_robin", entry)
    return entry


def test_a_registered_router_runs_in_the_moe_layer(round_robin):
    spec = MoeSpec(num_experts=E, router="round_robin")
    layer = base_layer.instantiate(
        pax_fiddle.Config(
            SparseMoe, name="moe", input_dims=D, hidden_dims=H, num_experts=E, spec=spec
        )
    )
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, D))
    params = layer.init({"params": jax.random.PRNGKey(1), "random": jax.random.PRNGKey(2)}, x)[
        "params"
    ]
    assert "router" not in params  # its create_weights made none
    with base_layer.JaxContext.new_context(hparams=base_layer.JaxContext.HParams(do_eval=True)):
        y, collections = layer.apply({"params": params}, x, mutable=[STATS])
    for t in range(6):
        e = t % E
        hidden = jax.nn.gelu(x[:, t] @ params["wi"][e] + params["bi"][e], approximate=True)
        np.testing.assert_allclose(
            y[:, t], hidden @ params["wo"][e] + params["bo"][e], rtol=1e-5, atol=1e-5
        )
    (load,) = collections[STATS]["expert_load"]
    np.testing.assert_allclose(load, [4 / 12, 4 / 12, 2 / 12, 2 / 12], rtol=1e-6)


def test_specs_and_flops_read_the_registry(round_robin):
    with pytest.raises(ValueError, match=r"'nope' is unknown; use one of .*'round_robin'"):
        MoeSpec(router="nope")
    spec = ModelSpec(
        family="vmoe",
        vit=VitSpec(
            image_size=16,
            patch_size=4,
            num_classes=10,
            model_dims=8,
            num_layers=2,
            mlp_dims=16,
            num_heads=2,
        ),
        moe=MoeSpec(num_experts=E, router="round_robin", placement="last_1"),
    )
    assert params_flops.expert_passes_per_token(spec) == 1.0


def test_every_built_in_router_declares_real_spec_fields():
    fields = set(MoeSpec.__dataclass_fields__)
    for name, entry in router_registry.ROUTERS.items():
        assert set(entry.uses) <= fields, name
        create, route_fn = entry.functions()
        assert callable(create) and callable(route_fn)
