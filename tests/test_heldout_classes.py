"""Held-out-class pretraining: DataSpec.classes (filter, relabel, split sizes), the transfer vs
in-domain label of a few-shot probe, experiment.json, and the few-shot evaluator during training.

Data tests read the embedded Fashion-MNIST (TFDS's default data_dir, as the training tests do)
and compare the pipeline with a plain numpy filter of the same split read straight from TFDS.
"""

import dataclasses
import json
import os

import gin
import numpy as np
import pytest
import tensorflow_datasets as tfds

from harness.config import experiment_file
from harness.config.experiment import Experiment, validate
from harness.data import fewshot_datasets, metadata, pipeline
from harness.data.fewshot_datasets import (
    FASHION_MNIST_HELDOUT_CLASSES,
    FASHION_MNIST_PRETRAIN_CLASSES,
    FewShotDataset,
    FewShotSpec,
    filter_classes,
    setting,
)
from harness.data.spec import DataSpec
from harness.errors import UsageError
from harness.run_dir.events import read_scalars
from harness.train import launch
from harness.train.resume import first_difference
from harness.transfer import fewshot

EVAL_SPLIT = "test[:300]"


def _split(split: str) -> tuple[np.ndarray, np.ndarray]:
    builder = metadata.prepared_builder(DataSpec())
    arrays = tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False, batch_size=-1))
    return arrays["image"], arrays["label"]


def test_eval_batches_keep_the_classes_in_file_order_relabelled():
    classes = (8, 0, 5)  # Out of order on purpose: label 8 must become 0.
    spec = DataSpec(classes=list(classes), eval_split=EVAL_SPLIT, eval_batch_size=64)
    assert spec.classes == classes  # A gin list is kept as a tuple.
    images, labels = _split(EVAL_SPLIT)
    want_images, want_labels = filter_classes(images, labels, classes)

    batches = list(pipeline.eval_batches(spec))
    mask = np.concatenate([b["mask"] for b in batches]) > 0
    got_labels = np.concatenate([b["label"] for b in batches])[mask]
    got_images = np.concatenate([b["image"] for b in batches])[mask]
    np.testing.assert_array_equal(got_labels, want_labels)
    np.testing.assert_allclose(got_images, want_images / 127.5 - 1.0, atol=1e-6)
    assert len(batches) == -(-len(want_labels) // 64)  # Padded to whole batches, no more.


def _labels(split: str) -> np.ndarray:
    builder = metadata.prepared_builder(DataSpec())
    decoders = tfds.decode.PartialDecoding({"label": True})
    ds = builder.as_dataset(split=split, shuffle_files=False, batch_size=-1, decoders=decoders)
    return tfds.as_numpy(ds)["label"]


def test_dataset_info_and_train_batches_of_a_class_subset():
    spec = DataSpec(
        classes=FASHION_MNIST_PRETRAIN_CLASSES,
        eval_split=EVAL_SPLIT,
        batch_size=256,
        shuffle_buffer=1024,
    )
    train_labels, eval_labels = _labels("train"), _labels(EVAL_SPLIT)
    info = metadata.dataset_info(spec)
    assert info.num_classes == len(FASHION_MNIST_PRETRAIN_CLASSES)
    assert info.num_train_examples == np.isin(train_labels, FASHION_MNIST_PRETRAIN_CLASSES).sum()
    assert info.num_eval_examples == np.isin(eval_labels, FASHION_MNIST_PRETRAIN_CLASSES).sum()
    # Fashion-MNIST is balanced, so the pretraining half is exactly half of each split.
    assert info.num_train_examples == 30_000

    batch = next(pipeline.train_batches(spec, seed=0))
    assert batch["image"].shape == (256, 28, 28, 1)
    # A shuffled batch of 256 from 5 balanced classes holds every new label and nothing else.
    assert sorted(set(batch["label"].tolist())) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "classes, match",
    [
        ((3,), "fewer than 2 classes"),
        ((1, 2, 1), r"repeats \[1\]"),
        ((-1, 2), "negative label"),
        ((0, "1"), "must be integer labels"),
    ],
)
def test_bad_classes_are_one_line_value_errors(classes, match):
    with pytest.raises(ValueError, match=match) as raised:
        DataSpec(classes=classes)
    # gin appends its own context lines; the message is the first line, as the CLI prints it.
    assert str(raised.value).splitlines()[0].startswith(f"DataSpec.classes={tuple(classes)}")


def test_a_class_beyond_the_dataset_names_its_labels():
    with pytest.raises(UsageError, match=r"has \[10\], but fashion_mnist has labels 0\.\.9"):
        metadata.dataset_info(DataSpec(classes=(0, 10)))


def test_validate_asks_for_the_subset_class_count():
    base = Experiment.from_gin()  # Defaults: a 1000-class ViT at 224 px.
    model = dataclasses.replace(base.model, vit=dataclasses.replace(base.model.vit, num_channels=1))
    data = DataSpec(classes=FASHION_MNIST_PRETRAIN_CLASSES, image_size=224, eval_split=EVAL_SPLIT)
    experiment = dataclasses.replace(base, model=model, data=data)
    with pytest.raises(ValueError, match=r"subset has 5 classes .* VitSpec.num_classes=5$"):
        validate(experiment, 1)


def test_a_probe_of_held_out_classes_is_transfer_only_when_disjoint():
    name = "fashion_mnist_heldout"
    kind, line = setting(name, "fashion_mnist", FASHION_MNIST_PRETRAIN_CLASSES)
    assert kind == "transfer"
    assert f"classes {list(FASHION_MNIST_HELDOUT_CLASSES)} were held out" in line
    assert setting(name, "fashion_mnist", None)[0] == "in-domain"  # Trained on every class.
    assert setting(name, "fashion_mnist", (0, 3))[0] == "in-domain"  # Class 3 was trained on.
    # All ten classes always include the trained ones; another dataset is always transfer.
    assert setting("fashion_mnist", "fashion_mnist", FASHION_MNIST_PRETRAIN_CLASSES)[0] == (
        "in-domain"
    )
    assert setting(name, "cifar10", None)[0] == "transfer"


def test_experiment_json_round_trips_classes_and_fewshot(tmp_path):
    base = Experiment.from_gin()
    experiment = Experiment(
        model=base.model,
        train=base.train,
        mesh=base.mesh,
        optimizer=base.optimizer,
        data=DataSpec(classes=(2, 7)),
        fewshot=FewShotSpec(datasets=("fashion_mnist_heldout",), shots=(1, 5), seeds=(0,)),
    )
    experiment_file.write_experiment(str(tmp_path), experiment)
    assert experiment_file.load_experiment(str(tmp_path)) == experiment

    # A run recorded before these fields existed still loads, with every class.
    path = tmp_path / experiment_file.EXPERIMENT_FILE
    data = json.loads(path.read_text())
    del data["fewshot"], data["data"]["classes"]
    path.write_text(json.dumps(data))
    old = experiment_file.load_experiment(str(tmp_path))
    assert old.data.classes is None and old.fewshot == FewShotSpec()


def test_resume_may_change_the_probes_but_not_the_classes():
    base = Experiment.from_gin()
    before = dataclasses.replace(base, data=DataSpec(classes=(0, 1)))
    probes = FewShotSpec(datasets=("fashion_mnist_heldout",), shots=(1,), seeds=(0,))
    train = dataclasses.replace(base.train, fewshot_every_steps=10)
    assert (
        first_difference(before, dataclasses.replace(before, fewshot=probes, train=train)) is None
    )
    other_classes = dataclasses.replace(base, data=DataSpec(classes=(0, 2)))
    assert first_difference(before, other_classes) == ("DataSpec.classes", (0, 1), (0, 2))


SHORT = [
    "TrainSpec.num_epochs=None",
    "TrainSpec.num_steps=6",
    "TrainSpec.fewshot_every_steps=4",
    f"DataSpec.eval_split={EVAL_SPLIT!r}",
    "FewShotSpec.shots=(1, 5)",
    "FewShotSpec.seeds=(0,)",
]
PRETRAIN = ["gin/cpu/vit.gin", "gin/data/fashion_mnist_pretrain.gin"]


@pytest.mark.slow
def test_training_probes_the_held_out_classes(tmp_path, monkeypatch):
    # Slices keep the probe to seconds; the protocol is the same on whole splits.
    monkeypatch.setitem(
        fewshot_datasets.FEWSHOT_DATASETS,
        "fashion_mnist_heldout",
        FewShotDataset("fashion_mnist", "train[:2000]", "test[:500]", classes=(3, 4, 6, 7, 9)),
    )
    heldout_reads = []
    read = pipeline.eval_batches

    def counted(spec: DataSpec, *args):
        if spec.classes == FASHION_MNIST_HELDOUT_CLASSES:
            heldout_reads.append(spec.eval_split)
        return read(spec, *args)

    monkeypatch.setattr(pipeline, "eval_batches", counted)
    run_dir = str(tmp_path / "vit_heldout")
    try:
        launch.train(PRETRAIN, SHORT, run_dir)
    finally:
        gin.clear_config()  # launch.train leaves its bindings parsed
    # Two evaluations, but each split's images were read once and kept.
    assert sorted(heldout_reads) == ["test[:500]", "train[:2000]"]

    tags = [fewshot.fewshot_tag("fashion_mnist_heldout", s) for s in (1, 5)]
    scalars = read_scalars(run_dir)
    for tag in tags:  # At every 4th step and at the last one.
        assert [step for step, _ in scalars[tag]] == [4, 6]
        assert all(0.0 <= value <= 1.0 for _, value in scalars[tag])

    with open(os.path.join(run_dir, "results.json")) as f:
        results = json.load(f)
    eval_labels = _labels(EVAL_SPLIT)
    assert results["eval"]["eval/num_examples"] == np.isin(eval_labels, (0, 1, 2, 5, 8)).sum()
    payload = results["fewshot"]
    assert set(payload) == {"method", "results", "summary"}
    assert payload["method"]["step"] == 6
    assert payload["method"]["trained_classes"] == [0, 1, 2, 5, 8]
    assert payload["method"]["datasets"]["fashion_mnist_heldout"]["setting"] == "transfer"
    assert set(payload["summary"]) == set(tags)
    for tag in tags:
        row = payload["summary"][tag]
        assert 0.0 <= row["mean"] <= 1.0 and row["num_seeds"] == 1
        assert row["mean"] == pytest.approx(scalars[tag][-1][1], abs=1e-6)
    assert len(payload["results"]) == 2  # Two shot counts, one seed, one l2.
    # Five held-out classes: chance is 0.2; 5 shots of a trained body do better.
    assert payload["summary"][tags[1]]["mean"] > 0.2


def test_an_unprepared_fewshot_dataset_stops_before_training(tmp_path):
    run_dir = tmp_path / "run"
    empty = str(tmp_path / "no_tfds")
    bindings = [*SHORT, "FewShotSpec.datasets=('cifar10',)", f"FewShotSpec.data_dir={empty!r}"]
    with pytest.raises(UsageError, match=r"FewShotSpec.datasets has 'cifar10'.*not prepared") as e:
        try:
            launch.train(PRETRAIN, bindings, str(run_dir))
        finally:
            gin.clear_config()  # launch.train leaves its bindings parsed
    assert "fewshot_every_steps=0" in str(e.value) and "\n" not in str(e.value)
    assert not run_dir.exists()
