"""Issue 26: a run directory read as data (sweep, fewshot, the report's timing) names its
data in experiment.json, but may make the command read only registered datasets, from the
user's data_dir: never a community loader that reaches the network ('kubric:movi_a',
'huggingface:x/y'), never a directory of its own choosing (data_dir='/etc' had Fashion-MNIST
prepared into /etc)."""

import dataclasses
import json

import gin
import pytest
import tensorflow_datasets as tfds

from harness.cli import preflight
from harness.config import experiment_file, gin_config
from harness.config.experiment import Experiment
from harness.data import metadata
from harness.errors import UsageError
from harness.run_dir import data_sources
from harness.runtime import restore


@pytest.fixture(scope="module")
def experiment():
    try:
        gin_config.parse_gin(["gin/cpu/vit.gin"], [])
        return Experiment.from_gin()
    finally:
        gin.clear_config()


def _run_dir(tmp_path, experiment, **data_fields) -> str:
    """A run directory whose experiment.json names `data_fields` (and a checkpoint dir, so
    that only the data can be what is refused)."""
    data = experiment_file.experiment_to_data(experiment)
    data["data"].update(data_fields)
    (tmp_path / "checkpoints" / "2").mkdir(parents=True)
    (tmp_path / experiment_file.EXPERIMENT_FILE).write_text(json.dumps(data))
    return str(tmp_path)


@pytest.fixture
def no_builders(monkeypatch):
    """Any attempt to open a dataset (and through it the network or a data_dir) fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a dataset builder was opened")

    monkeypatch.setattr(tfds, "builder", refuse)
    monkeypatch.setattr(metadata, "_fashion_mnist_builder", refuse)


@pytest.mark.parametrize(
    "dataset, expected",
    [
        ("kubric:movi_a", "community dataset"),
        ("huggingface:x/y", "community dataset"),
        ("no_such_dataset_26", "neither TFDS nor the project"),
    ],
)
def test_a_run_directory_may_not_name_a_remote_or_unknown_dataset(
    tmp_path, experiment, no_builders, dataset, expected
):
    run_dir = _run_dir(tmp_path, experiment, dataset=dataset)
    for load in (preflight.trained_run_dir, restore.load_trained):
        with pytest.raises(UsageError, match=expected) as caught:
            load(run_dir)
        assert "\n" not in str(caught.value) and repr(dataset) in str(caught.value)


def test_a_run_directorys_own_data_dir_is_refused_and_left_untouched(
    tmp_path, experiment, no_builders
):
    chosen = tmp_path / "chosen_by_the_run"  # stands for /etc: it must not be created
    run_dir = _run_dir(tmp_path / "run", experiment, data_dir=str(chosen))
    for load in (preflight.trained_run_dir, restore.load_trained):
        with pytest.raises(UsageError, match="--data_dir=") as caught:
            load(run_dir)
        assert "\n" not in str(caught.value) and str(chosen) in str(caught.value)
    assert not chosen.exists()


def test_the_users_data_dir_replaces_the_run_directorys(experiment, tmp_path):
    data = dataclasses.replace(experiment.data, data_dir="/etc")
    read = data_sources.for_reading(data, "x/experiment.json", str(tmp_path))
    assert read.data_dir == str(tmp_path) and read.dataset == data.dataset


@pytest.mark.parametrize("recorded", [None, "default"])
def test_the_default_data_dir_and_registered_datasets_are_read_as_recorded(
    experiment, recorded, monkeypatch, tmp_path
):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    data_dir = str(tmp_path) + "/" if recorded == "default" else None
    for dataset in ("fashion_mnist", "cifar10", "oxford_iiit_pet:4.*.*", "synthetic"):
        data = dataclasses.replace(experiment.data, dataset=dataset, data_dir=data_dir)
        assert data_sources.for_reading(data, "x/experiment.json") == data
