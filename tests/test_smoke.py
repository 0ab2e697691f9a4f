"""The pinned stack works end to end: praxis layer -> init/apply -> sharded jit step on a mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from praxis import base_layer, pax_fiddle
from praxis.layers import activations, transformers


def _transformer_config() -> pax_fiddle.Config:
    p = pax_fiddle.Config(
        transformers.Transformer,
        name="block",
        input_dims=16,
        hidden_dims=64,
        num_heads=4,
        mesh_axis_names=("data", "model"),
        ici_mesh_shape=[2, 4],
    )
    ff = p.tr_fflayer_tpl
    ff.activation_tpl = pax_fiddle.Config(activations.GELU)
    # Megatron-style: hidden dimension of the MLP split over 'model'.
    ff.weight_split_dims_mapping.ffn0 = [None, "model"]
    ff.weight_split_dims_mapping.ffn1 = ["model", None]
    return p


def test_eight_simulated_devices():
    assert jax.device_count() == 8


def test_praxis_transformer_init_apply_and_sharded_jit_step():
    layer = base_layer.instantiate(_transformer_config())
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 5, 16))
    paddings = jnp.zeros((8, 5))
    attention_mask = jnp.zeros((8, 1, 5, 5))
    rngs = {"params": jax.random.PRNGKey(1), "random": jax.random.PRNGKey(2)}

    variables = layer.init(rngs, x, paddings, attention_mask)
    y, _ = layer.apply(variables, x, paddings, attention_mask)
    assert y.shape == x.shape
    assert bool(jnp.all(jnp.isfinite(y)))

    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
    specs = base_layer.var_partition_specs(
        layer.abstract_init_with_metadata(x, paddings, attention_mask)["params"],
        mesh_shape=[2, 4],
        device_axis_names=["data", "model"],
    )
    ffn_in_spec = specs["ff_layer"]["ffn_layer1"]["linear"]["w"]
    assert ffn_in_spec == PartitionSpec(None, "model")

    param_shardings = jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), specs)
    params = jax.device_put(variables["params"], param_shardings)
    w_in = params["ff_layer"]["ffn_layer1"]["linear"]["w"]
    assert w_in.sharding.shard_shape(w_in.shape) == (16, 64 // 4)

    batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    target = jnp.zeros_like(x)
    optimizer = optax.sgd(0.1)

    def loss_fn(p, inputs):
        out, _ = layer.apply({"params": p}, inputs, paddings, attention_mask)
        return jnp.mean((out - target) ** 2)

    def step(p, opt_state, inputs):
        loss, grads = jax.value_and_grad(loss_fn)(p, inputs)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(p, updates), opt_state, loss

    jitted = jax.jit(
        step,
        in_shardings=(param_shardings, None, batch_sharding),
        out_shardings=(param_shardings, None, None),
    )
    with mesh:
        opt_state = optimizer.init(params)
        new_params, _, loss0 = jitted(params, opt_state, jax.device_put(x, batch_sharding))
        _, _, loss1 = jitted(new_params, optimizer.init(new_params), x)
    assert float(loss1) < float(loss0)
    assert new_params["ff_layer"]["ffn_layer1"]["linear"]["w"].sharding == w_in.sharding
