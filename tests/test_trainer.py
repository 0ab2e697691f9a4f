"""The pjit trainer: every family trains on the simulated 8-device mesh and experts shard over
'expert' (several processes: tests/test_multiprocess.py)."""

import glob
import os

import gin
import jax
import pytest
from jax.sharding import PartitionSpec

from harness.config import gin_config
from harness.config.experiment import Experiment, validate
from harness.run_dir.events import read_scalars
from harness.train import trainer

CPU_CONFIGS = sorted(glob.glob(os.path.join(gin_config.REPO_ROOT, "gin/cpu/*.gin")))
# Tests of plumbing (sharding, resume, files) evaluate on a slice of the test split.
QUICK_EVAL = "DataSpec.eval_split='test[:1000]'"
CPU_FAMILIES = {"vit": "vit", "vmoe": "vmoe", "widenet": "widenet", "vit22b": "vit22b"}


@pytest.fixture(autouse=True)
def _clear_gin():
    yield
    gin.clear_config()


def _experiment(gin_file: str, *params: str) -> Experiment:
    gin_config.parse_gin([gin_file], list(params))
    return Experiment.from_gin()


def _train(workdir, gin_file: str, *params: str) -> tuple[trainer.Trainer, dict]:
    experiment = _experiment(gin_file, *params)
    mesh_shape = validate(experiment, jax.device_count())
    run = trainer.Trainer(experiment, str(workdir), mesh_shape)
    return run, run.run()


@pytest.mark.parametrize("family", sorted(CPU_FAMILIES))
def test_cpu_configs_name_their_family_and_validate(family):
    experiment = _experiment(f"gin/cpu/{family}.gin")
    assert experiment.model.family == family
    assert validate(experiment, 8) == (8, 1, 1)
    assert experiment.data.dataset == "fashion_mnist"


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(CPU_FAMILIES))
def test_tiny_training_loss_falls_and_accuracy_clears_chance(tmp_path, family):
    _, outcome = _train(
        tmp_path,
        f"gin/cpu/{family}.gin",
        "TrainSpec.num_epochs=None",
        "TrainSpec.num_steps=100",
        "TrainSpec.log_every_steps=20",
        "OptimizerSpec.warmup_steps=20",
        "DataSpec.eval_split='test[:2000]'",
    )
    losses = [value for _, value in read_scalars(str(tmp_path))["train/loss"]]
    assert len(losses) == 6  # step 1, then every 20 steps
    assert losses[-1] < 0.6 * losses[0]
    assert outcome["eval"]["eval/num_examples"] == 2000
    assert outcome["eval"]["eval/top1"] > 0.5  # chance is 0.1
    if family in ("vmoe", "widenet"):
        dropped = [k for k in outcome["eval"] if k.startswith("eval/routing/dropped_fraction/")]
        assert dropped, "sparse models report dropped tokens per MoE block"
        assert all(0.0 <= outcome["eval"][k] < 1.0 for k in dropped)


@pytest.mark.slow
# (2, 2, 2) puts every axis to work; tests/test_moe.py covers (2, 4, 1) at the layer level.
@pytest.mark.parametrize("mesh", [(2, 2, 2)])
def test_vmoe_trains_with_experts_sharded_over_the_expert_axis(tmp_path, mesh):
    data_axis, expert_axis, model_axis = mesh
    run, outcome = _train(
        tmp_path,
        "gin/cpu/vmoe.gin",
        "TrainSpec.num_epochs=None",
        "TrainSpec.num_steps=4",
        "TrainSpec.log_every_steps=2",
        f"MeshSpec.data={data_axis}",
        f"MeshSpec.expert={expert_axis}",
        f"MeshSpec.model={model_axis}",
        QUICK_EVAL,
    )
    assert run.mesh.shape == {"data": data_axis, "expert": expert_axis, "model": model_axis}
    moe_params = run.state_shardings.params["encoder"]["x_layers_1"]["ff_layer"]["moe"]
    assert moe_params["wi"].spec == PartitionSpec("expert", None, "model")
    restored = run.abstract_state()
    wi = restored.params["encoder"]["x_layers_1"]["ff_layer"]["moe"]["wi"]
    experts, width, hidden = wi.shape
    assert wi.sharding.shard_shape(wi.shape) == (
        experts // expert_axis,
        width,
        hidden // model_axis,
    )
    assert outcome["eval"]["eval/num_examples"] == 1000
