"""Weights and optimizer state split over 'data' (MeshSpec.shard_params_over_data): which
dimension gets split, the memory it saves per device, and a step that trains as before."""

import gin
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from harness.config import gin_config
from harness.config.experiment import Experiment, validate
from harness.measure import memory_plan
from harness.runtime import fsdp
from harness.runtime.checkpointing import Checkpointer
from harness.train import trainer


@pytest.mark.parametrize(
    "shape, spec, data, expected",
    [
        ((64, 256), P(None, "model"), 4, P("data", "model")),  # the one free dimension
        ((64, 256), P(), 4, P(None, "data")),  # the largest free dimension
        ((2, 64, 256), P("expert", None, "model"), 4, P("expert", "data", "model")),
        ((256, 256), P(), 4, P("data", None)),  # ties: the first, so the layout is stable
        ((10,), P(), 4, P()),  # nothing the data axis divides: stays replicated
        ((6, 12), P(None, "model"), 4, P(None, "model")),
        ((64, 256), P(), 1, P()),  # no data axis to split over
        ((64, 256), P(("data", "expert"), None), 2, P(("data", "expert"), None)),
    ],
)
def test_the_largest_free_dimension_the_data_axis_divides_is_split(shape, spec, data, expected):
    assert fsdp.shard_over_data(shape, spec, data) == expected


def test_a_tree_of_specs_is_split_weight_by_weight():
    shapes = {"w": jax.ShapeDtypeStruct((64, 256), np.float32), "b": np.zeros((10,))}
    partition = {"w": P(None, "model"), "b": P()}
    assert fsdp.shard_tree_over_data(shapes, partition, 4) == {"w": P("data", "model"), "b": P()}


def _trainer(shard_params_over_data: bool) -> trainer.Trainer:
    gin.clear_config()
    gin_config.parse_gin(
        ["gin/cpu/vmoe.gin"],
        [
            "VitSpec.num_layers=2",
            "MoeSpec.num_experts=2",
            "MeshSpec.data=4",
            "MeshSpec.expert=2",
            f"MeshSpec.shard_params_over_data={shard_params_over_data}",
            "OptimizerSpec.warmup_steps=0",
        ],
    )
    experiment = Experiment.from_gin()
    gin.clear_config()
    return trainer.Trainer(experiment, "/unused", validate(experiment, jax.device_count()))


def _bytes_on_device(tree, device: jax.Device) -> int:
    return sum(
        shard.data.nbytes
        for leaf in jax.tree_util.tree_leaves(tree)
        for shard in leaf.addressable_shards
        if shard.device == device
    )


@pytest.mark.slow
def test_fsdp_quarters_weight_and_adam_memory_and_trains_the_same(tmp_path):
    plain, sharded = _trainer(False), _trainer(True)
    plain_state, sharded_state = plain.init_state(), sharded.init_state()
    device = jax.devices()[0]
    plain_bytes = _bytes_on_device((plain_state.params, plain_state.opt_state), device)
    sharded_bytes = _bytes_on_device((sharded_state.params, sharded_state.opt_state), device)
    # data=4: all but the few weights with no dimension divisible by 4 (the 10-class bias)
    # are split four ways.
    assert 3.9 < plain_bytes / sharded_bytes <= 4.0
    # The memory plan counts this very layout (harness/measure/weight_memory.py).
    weights = memory_plan.model_weights(sharded.experiment.model, (4, 2, 1))
    for fsdp_on, state in ((False, plain_state), (True, sharded_state)):
        held = _bytes_on_device(state.params, device)
        assert weights.bytes_per_device((4, 2, 1), fsdp_on) == held
    wi = sharded.state_shardings.params["encoder"]["x_layers_1"]["ff_layer"]["moe"]["wi"]
    assert wi.spec == P("expert", "data", "model")

    # A checkpoint of the plain run restores into the sharded layout with the same values.
    checkpointer = Checkpointer(str(tmp_path), keep=1)
    checkpointer.save(0, plain_state)
    restored = checkpointer.restore(0, sharded.abstract_state())
    checkpointer.close()
    restored_wi = restored.params["encoder"]["x_layers_1"]["ff_layer"]["moe"]["wi"]
    assert restored_wi.sharding.spec == P("expert", "data", "model")
    np.testing.assert_array_equal(
        jax.device_get(restored_wi),
        jax.device_get(sharded_state.params["encoder"]["x_layers_1"]["ff_layer"]["moe"]["wi"]),
    )

    rng = np.random.default_rng(0)
    local = {
        "image": rng.uniform(-1, 1, (16, 28, 28, 1)).astype(np.float32),
        "label": rng.integers(0, 10, 16).astype(np.int32),
    }
    losses = []
    for run, state in ((plain, plain_state), (sharded, restored)):
        with run.mesh:
            state, _ = run.train_step(state, run.global_batch(local, run.batch_shardings))
            _, metrics = run.train_step(state, run.global_batch(local, run.batch_shardings))
        losses.append(float(metrics["train/loss"]))
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
