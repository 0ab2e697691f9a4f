"""Expert parallelism by all-to-all (models/moe/expert_parallel.py), read from compiled train
steps on 8 simulated devices: tokens reach their experts by all-to-all, no device gathers
other devices' tokens or experts' weights, the results are the one-device step's, and a
device's temporary memory does not grow with the global batch."""

import functools
from typing import Any

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from praxis import base_layer, pax_fiddle

from bench import collectives
from models.moe.layers import SparseMoe
from models.specs import MESH_AXES, MoeSpec

PER_DEVICE_BATCH = 2


@functools.cache
def _step(router: str, mesh: tuple[int, int, int]) -> collectives.TrainStep:
    return collectives.make_train_step(collectives.tiny_vmoe(router), mesh)


@functools.cache
def _batch(images: int) -> tuple[jax.Array, jax.Array]:
    return collectives.batch(collectives.tiny_vmoe(), images)


@functools.cache
def _compiled(router: str, mesh: tuple[int, int, int]) -> collectives.Compiled:
    """The train step at PER_DEVICE_BATCH images per device, compiled once."""
    images, labels = _batch(PER_DEVICE_BATCH * int(np.prod(mesh)))
    return collectives.compile_with_stats(_step(router, mesh).lower(images, labels))


def _gathers_tokens_or_experts(op: collectives.Collective) -> bool:
    """Token activations are [.., tokens, D] (hidden [.., H]); expert weights lead with E.
    The chosen sizes are distinct, so any such dimension in an all-gather's result is one."""
    dims = op.results[0][1]
    sizes = (collectives.DIMS, collectives.HIDDEN, collectives.TOKENS)
    return any(d in sizes for d in dims) or (len(dims) > 1 and dims[0] == collectives.EXPERTS)


def test_parser_reads_tuple_all_to_alls_and_all_gathers() -> None:
    hlo = (
        "%all-to-all.1 = (f32[1,2,7,24]{3,2,1,0}, /*index=1*/f32[1,2,7,24]{3,2,1,0}) "
        "all-to-all(f32[1,2,7,24]{3,2,1,0} %a, f32[1,2,7,24]{3,2,1,0} %b), dimensions={0}\n"
        "%all-gather.2 = f32[16,26,24]{2,1,0} all-gather(f32[2,26,24]{2,1,0} %x), "
        "replica_groups={{0,1,2,3,4,5,6,7}}, dimensions={0}\n"
        "%add.3 = f32[2]{0} add(f32[2]{0} %p, f32[2]{0} %q)\n"
    )
    ops = collectives.collectives(hlo)
    assert [op.kind for op in ops] == ["all-to-all", "all-gather"]
    assert ops[0].bytes == 2 * 2 * 7 * 24 * 4
    assert ops[1].results == (("f32", (16, 26, 24)),)
    assert ops[1].operands == (("f32", (2, 26, 24)),)
    assert _gathers_tokens_or_experts(ops[1])
    assert collectives.summary(ops) == {"all-to-all": (1, 2688), "all-gather": (1, 39936)}


@pytest.mark.slow
@pytest.mark.parametrize(
    "router, mesh",
    [
        ("top_k", (1, 8, 1)),
        ("top_k", (2, 4, 1)),
        ("expert_choice", (2, 4, 1)),
        ("soft", (2, 4, 1)),
    ],
)
def test_train_step_all_to_alls_tokens_and_matches_one_device(
    router: str, mesh: tuple[int, int, int]
) -> None:
    compiled = _compiled(router, mesh)
    ops = collectives.collectives(compiled.hlo)
    assert any(op.kind == "all-to-all" for op in ops)
    gathered = [op for op in ops if op.kind == "all-gather" and _gathers_tokens_or_experts(op)]
    assert not gathered, gathered

    images, labels = _batch(PER_DEVICE_BATCH * int(np.prod(mesh)))
    step = _step(router, mesh)
    loss, grads, _ = step(images, labels, compiled.executable)
    want_loss, want_grads, _ = _step(router, (1, 1, 1))(images, labels)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    jax.tree_util.tree_map(
        lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5), grads, want_grads
    )


@pytest.mark.slow
def test_temp_memory_does_not_grow_with_the_global_batch() -> None:
    """4 then 8 devices, the same images per device: twice the global batch. Any buffer of
    the global batch's tokens would grow by at least 8 images' activations."""
    on_4 = _compiled("top_k", (1, 4, 1)).temp_bytes
    on_8 = _compiled("top_k", (2, 4, 1)).temp_bytes
    image_bytes = collectives.TOKENS * collectives.DIMS * 4
    assert on_4 > 0
    assert on_8 - on_4 < image_bytes, (on_4, on_8)


def test_expert_dropout_runs_per_device_in_training_only() -> None:
    """Dropout inside the per-device experts: random in training, off in eval, and the sharded
    eval output is the unsharded one."""
    mesh_shape = (2, 4, 1)
    layer = base_layer.instantiate(
        pax_fiddle.Config(
            SparseMoe,
            name="moe",
            input_dims=8,
            hidden_dims=16,
            num_experts=8,
            relu_dropout_prob=0.5,
            spec=MoeSpec(num_experts=8, capacity_factor=1.0),
            mesh_axis_names=MESH_AXES,
            ici_mesh_shape=list(mesh_shape),
        )
    )
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 4, 8))
    params = layer.init({"params": jax.random.PRNGKey(1), "random": jax.random.PRNGKey(2)}, x)

    def apply(p: Any, inputs: jax.Array, seed: int, eval_mode: bool) -> jax.Array:
        context = base_layer.JaxContext.HParams(do_eval=eval_mode)
        with base_layer.JaxContext.new_context(hparams=context):
            return layer.apply(
                p, inputs, rngs={"random": jax.random.PRNGKey(seed)}, mutable=["stats"]
            )[0]

    mesh = Mesh(np.array(jax.devices()).reshape(mesh_shape), MESH_AXES)
    with mesh:
        inputs = jax.device_put(x, NamedSharding(mesh, PartitionSpec(("data", "expert"))))
        run = jax.jit(apply, static_argnums=(2, 3))
        train_a, train_b = run(params, inputs, 1, False), run(params, inputs, 2, False)
        eval_a, eval_b = run(params, inputs, 1, True), run(params, inputs, 2, True)
    assert np.all(np.isfinite(train_a))
    assert not np.allclose(train_a, train_b)
    np.testing.assert_array_equal(eval_a, eval_b)
    np.testing.assert_allclose(eval_a, apply(params, x, 1, True), rtol=1e-5, atol=1e-6)
