"""One seed, one initial model, whatever the mesh: weights drawn shard by shard on (2,4,1),
(4,2,1) or (2,2,2) equal those drawn whole (the data-only mesh replicates every weight)."""

import gin
import jax
import numpy as np
import pytest

from harness.config import gin_config
from harness.config.experiment import Experiment
from harness.train import trainer


def _initial_params(mesh: tuple[int, int, int]) -> dict:
    gin.clear_config()
    gin_config.parse_gin(
        ["gin/cpu/vmoe.gin"],
        [
            "VitSpec.num_layers=2",
            "MoeSpec.num_experts=4",
            *(f"MeshSpec.{a}={s}" for a, s in zip(("data", "expert", "model"), mesh, strict=True)),
        ],
    )
    experiment = Experiment.from_gin()
    gin.clear_config()
    return jax.device_get(trainer.Trainer(experiment, "/unused", mesh).init_state().params)


@pytest.mark.slow
def test_initial_weights_do_not_depend_on_the_mesh():
    whole = _initial_params((8, 1, 1))
    for mesh in [(2, 4, 1), (4, 2, 1), (2, 2, 2)]:
        sharded = _initial_params(mesh)
        jax.tree_util.tree_map_with_path(
            lambda path, a, b, mesh=mesh: np.testing.assert_array_equal(
                a, b, err_msg=f"{jax.tree_util.keystr(path)} on mesh {mesh}"
            ),
            whole,
            sharded,
        )
