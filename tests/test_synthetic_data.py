"""Synthetic data (gin/data/synthetic.gin): batches drawn on the devices in the trainer's layout,
deterministic per seed and step, shaped like the model unless bound otherwise; and every paper
config running one step on it at reduced size on 8 simulated devices."""

import json
import math
import os
import subprocess
import sys

import gin
import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding

from harness import project
from harness.config import gin_config
from harness.config.experiment import Experiment, validate
from harness.data import synthetic
from harness.data.spec import DataSpec
from harness.data.synthetic_spec import SyntheticSpec
from harness.run_dir import run_record
from harness.run_dir.events import read_scalars
from harness.runtime.mesh import batch_spec
from models.specs import MESH_AXES

PAPER_RUN_SECONDS = 1500  # One subprocess trains all 15 configs; compile time dominates.
# 8 simulated devices, and no LLVM optimisation of the CPU code: these steps run once, so
# compiling them fast matters more (it cut the CPU time per config by about a third).
FAST_COMPILE_FLAGS = "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"


@pytest.fixture(autouse=True)
def _clear_gin():
    yield
    gin.clear_config()


def _shardings(mask: bool = False) -> dict[str, NamedSharding]:
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4, 1), MESH_AXES)
    shardings = {
        "image": NamedSharding(mesh, batch_spec(4)),
        "label": NamedSharding(mesh, batch_spec(1)),
    }
    if mask:
        shardings["mask"] = NamedSharding(mesh, batch_spec(1))
    return shardings


def _data(**synthetic_fields) -> DataSpec:
    fields = {"num_classes": 7, "num_channels": 2, **synthetic_fields}
    return DataSpec(
        dataset="synthetic",
        image_size=6,
        batch_size=16,
        eval_batch_size=24,
        synthetic=SyntheticSpec(**fields),
    )


def _take(batches, count: int) -> list[dict[str, np.ndarray]]:
    return [jax.device_get(next(batches)) for _ in range(count)]


def test_train_batches_have_the_spec_shape_and_the_trainer_sharding():
    shardings = _shardings()
    batch = next(synthetic.train_batches(_data(), shardings, seed=0))
    assert batch["image"].shape == (16, 6, 6, 2) and batch["label"].shape == (16,)
    assert batch["image"].sharding == shardings["image"]
    # Each of the 8 devices holds 2 images of its own, none replicated.
    assert {s.data.shape for s in batch["image"].addressable_shards} == {(2, 6, 6, 2)}
    images, labels = jax.device_get(batch["image"]), jax.device_get(batch["label"])
    assert -1.0 <= images.min() < -0.5 and 0.5 < images.max() <= 1.0
    assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() < 7


def test_train_batches_depend_on_seed_and_step_only():
    data, shardings = _data(), _shardings()
    first = _take(synthetic.train_batches(data, shardings, seed=3), 3)
    again = _take(synthetic.train_batches(data, shardings, seed=3), 3)
    resumed = _take(synthetic.train_batches(data, shardings, seed=3, start_step=2), 1)
    other_seed = _take(synthetic.train_batches(data, shardings, seed=4), 1)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
    np.testing.assert_array_equal(resumed[0]["image"], first[2]["image"])
    assert not np.array_equal(first[0]["image"], first[1]["image"])
    assert not np.array_equal(first[0]["image"], other_seed[0]["image"])


def test_batches_are_the_same_on_one_device_as_on_eight():
    data = _data()
    one_device = Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1), MESH_AXES)
    single = {k: NamedSharding(one_device, s.spec) for k, s in _shardings().items()}
    sharded = _take(synthetic.train_batches(data, _shardings(), seed=1), 1)[0]
    whole = _take(synthetic.train_batches(data, single, seed=1), 1)[0]
    np.testing.assert_array_equal(sharded["image"], whole["image"])
    np.testing.assert_array_equal(sharded["label"], whole["label"])


def test_eval_batches_mask_the_padding_of_the_nominal_split():
    data = _data(num_eval_examples=50)
    batches = [jax.device_get(b) for b in synthetic.eval_batches(data, _shardings(mask=True))]
    assert len(batches) == math.ceil(50 / 24)
    masks = np.concatenate([b["mask"] for b in batches])
    assert masks.sum() == 50 and masks[:50].all()  # the real examples first, then padding
    again = [jax.device_get(b) for b in synthetic.eval_batches(data, _shardings(mask=True))]
    np.testing.assert_array_equal(batches[0]["image"], again[0]["image"])


def _experiment(*gin_files: str, params: tuple[str, ...] = ()) -> Experiment:
    gin_config.parse_gin(list(gin_files), list(params))
    return Experiment.from_gin()


def test_synthetic_gin_takes_the_paper_models_shape_and_classes():
    experiment = _experiment("gin/vmoe_h14.gin", "gin/data/synthetic.gin")
    data = experiment.data
    assert data.dataset == "synthetic" and data.image_size == 224
    assert (data.synthetic.num_classes, data.synthetic.num_channels) == (1000, 3)
    assert data.batch_size == 4096  # the paper config's, from its ImageNet include
    small = _experiment(
        "gin/cpu/vit.gin", "gin/data/synthetic.gin", params=("VitSpec.image_size=14",)
    )
    assert small.data.image_size == 14 and small.data.synthetic.num_classes == 10
    assert validate(small, 8) == (8, 1, 1)


def test_synthetic_classes_bound_against_the_model_are_refused():
    experiment = _experiment(
        "gin/vit_b16.gin", "gin/data/synthetic.gin", params=("SyntheticSpec.num_classes=21843",)
    )
    with pytest.raises(ValueError, match=r"21843 classes but VitSpec\.num_classes=1000"):
        validate(experiment, 8)


@pytest.mark.parametrize("field", ["num_classes", "num_train_examples"])
def test_synthetic_spec_refuses_non_positive_sizes(field):
    with pytest.raises(ValueError, match=rf"SyntheticSpec\.{field}=0 must be >= 1"):
        SyntheticSpec(**{field: 0})


@pytest.mark.slow
def test_every_paper_config_trains_a_step_on_synthetic_data(tmp_path):
    worker = os.path.join(project.REPO_ROOT, "tests", "synthetic_paper_configs_worker.py")
    result = subprocess.run(
        [sys.executable, worker, str(tmp_path)],
        cwd=project.REPO_ROOT,
        env={**os.environ, "XLA_FLAGS": FAST_COMPILE_FLAGS},
        capture_output=True,
        text=True,
        timeout=PAPER_RUN_SECONDS,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    for name in project.PAPER_CONFIGS:
        workdir = tmp_path / name
        outcome = json.loads((workdir / run_record.RESULTS_FILE).read_text())
        assert outcome["train"]["steps"] == 1, name
        assert outcome["eval"]["eval/num_examples"] == 64, name
        assert np.isfinite(outcome["eval"]["eval/loss"]), name
        losses = [value for _, value in read_scalars(str(workdir))["train/loss"]]
        assert len(losses) == 1 and np.isfinite(losses[0]), name
        mesh = outcome["run"]["mesh"]
        sparse = outcome["run"]["family"] in ("vmoe", "widenet")
        assert mesh["expert"] == (4 if sparse else 1), name
    accumulated = json.loads((tmp_path / "vmoe_s32" / "experiment.json").read_text())
    assert accumulated["train"]["microbatches"] == 2
