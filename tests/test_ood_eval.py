"""OOD sets and shape bias evaluated with a run's model (harness/transfer/ood_eval.py).

A tiny 1000-class ViT with random weights reads hand-made TFDS examples through
`tfds.testing.mock_data` (as_dataset_fn), with split sizes from metadata written like a prepared
dataset's. Labels are set from the model's own predictions, so the expected scores are known
from the construction and checked against an independent numpy computation on the same logits.
The scorers themselves are tested in test_ood.py and test_shape_bias.py.
"""

import copy
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import gin
import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from harness import project
from harness.config import experiment_file
from harness.config.experiment import Experiment
from harness.config.train_spec import MeshSpec, OptimizerSpec, TrainSpec
from harness.data import metadata, pipeline
from harness.data.datasets import fashion_mnist_local
from harness.data.imagenet_subsets import IMAGENET_R_CLASSES
from harness.data.spec import DataSpec
from harness.errors import UsageError
from harness.run_dir import events
from harness.runtime.steps import apply_model
from harness.train import evaluate_checkpoint as evaluate_lib
from harness.train import launch, resume
from harness.transfer import ood_eval, shape_bias
from models.specs import ModelSpec, VitSpec
from tests import mock_tfds

NUM_EXAMPLES = 12  # With eval batches of 8: one full batch and one padded with 4 examples.
SIZE = 32
SPLITS = {
    "imagenet2012": ("train", "validation"),
    "imagenet_v2": ("test",),
    "imagenet_r": ("test",),
    "imagenet_a": ("test",),
    "imagenet_sketch": ("test",),
    "imagenet2012_real": ("validation",),
    "geirhos_conflict_stimuli": ("test",),
}


def _default_labels(name: str, index: int) -> dict[str, object]:
    if name == "imagenet2012_real":
        return {"original_label": index, "real_label": [index]}
    if name == "geirhos_conflict_stimuli":
        return {"shape_label": index % 16, "texture_label": index % 16}
    return {"label": index}


# Per TFDS name, the label features of each hand-made example; tests set them.
LABELS: dict[str, list[dict[str, object]]] = {
    name: [_default_labels(name, i) for i in range(NUM_EXAMPLES)] for name in SPLITS
}


def _image(index: int) -> np.ndarray:
    # Variable-size RGB images, as these datasets have: the eval crop and resize are exercised.
    return np.random.default_rng(index).integers(0, 256, (40 + index, 48, 3), dtype=np.uint8)


def _as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
    """The hand-made examples of LABELS[self.name], in the form the pipeline asks for."""
    del split, read_config, shuffle_files
    encoded = bool(decoders) and "image" in decoders  # JPEG features stay encoded.
    rows = LABELS[self.name]
    label_specs = {
        key: tf.TensorSpec((None,) if isinstance(value, list) else (), tf.int64)
        for key, value in rows[0].items()
    }
    image_spec = (
        tf.TensorSpec((), tf.string) if encoded else tf.TensorSpec((None, None, 3), tf.uint8)
    )

    def generate() -> Iterator[dict[str, object]]:
        for index, labels in enumerate(rows):
            image = _image(index)
            if encoded:
                image = tf.io.encode_jpeg(image).numpy()
            yield {"image": image, **{k: np.asarray(v, np.int64) for k, v in labels.items()}}

    return tf.data.Dataset.from_generator(
        generate, output_signature={"image": image_spec, **label_specs}
    )


@pytest.fixture(scope="module")
def mock_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Metadata of every set, prepared with NUM_EXAMPLES per split, without the data."""
    root = str(tmp_path_factory.mktemp("ood_tfds"))
    for name, splits in SPLITS.items():
        mock_tfds.write_metadata(root, name, {split: NUM_EXAMPLES for split in splits})
    return root


def mocked(root: str):
    return tfds.testing.mock_data(data_dir=root, as_dataset_fn=_as_dataset)


def tiny_experiment(**train: object) -> Experiment:
    vit = VitSpec(
        image_size=SIZE,
        patch_size=8,
        num_classes=1000,
        model_dims=32,
        num_layers=1,
        mlp_dims=64,
        num_heads=2,
    )
    data = DataSpec(dataset="imagenet2012", image_size=SIZE, batch_size=8, eval_batch_size=8)
    return Experiment(
        model=ModelSpec(family="vit", vit=vit),
        train=TrainSpec(num_steps=2, log_every_steps=1, checkpoint_every_steps=2, **train),
        mesh=MeshSpec(),
        optimizer=OptimizerSpec(warmup_steps=1),
        data=data,
    )


@pytest.fixture(scope="module")
def run(mock_root):
    from harness.train.trainer import Trainer

    with mocked(mock_root):
        trainer = Trainer(tiny_experiment(), "unused", (8, 1, 1))
        params = trainer.init_state().params
    return trainer, params


def model_logits(run, mock_root, tfds_name: str, split: str) -> np.ndarray:
    """The model's logits on a set's images, read and computed without ood_eval."""
    trainer, params = run
    spec = DataSpec(
        dataset=tfds_name,
        image_size=SIZE,
        batch_size=8,
        eval_batch_size=8,
        train_split=split,
        eval_split=split,
        label_key="original_label" if tfds_name == "imagenet2012_real" else None,
    )
    if tfds_name == "geirhos_conflict_stimuli":
        spec = dataclasses.replace(spec, label_key="shape_label")
    with mocked(mock_root):
        batches = list(pipeline.eval_batches(spec))
    images = np.concatenate([b["image"][b["mask"] > 0] for b in batches])
    assert len(images) == NUM_EXAMPLES
    host_params = jax.device_get(params)
    return np.asarray(apply_model(trainer.model, host_params, images, rng=None)[0], np.float64)


def test_ood_sets_and_shape_bias_are_scored_on_the_models_logits(run, mock_root):
    trainer, params = run
    # ImageNet-R: every other label is the model's masked (200-class) prediction.
    logits = model_logits(run, mock_root, "imagenet_r", "test")
    subset = np.asarray(IMAGENET_R_CLASSES)
    masked = subset[np.argmax(logits[:, subset], axis=1)]
    assert (np.argmax(logits, axis=1) != masked).any()  # So the 200-class mask matters.
    other = subset[(np.searchsorted(subset, masked) + 1) % len(subset)]
    r_labels = np.where(np.arange(NUM_EXAMPLES) % 2 == 0, masked, other)
    LABELS["imagenet_r"] = [{"label": int(label)} for label in r_labels]

    # ReaL: some images unlabelled (skipped), the others with one to three labels.
    real_logits = model_logits(run, mock_root, "imagenet2012_real", "validation")
    top = np.argmax(real_logits, axis=1)
    wrong = (top + 1) % 1000
    patterns = [[], [wrong, top], [wrong], [top, wrong, (wrong + 1) % 1000]]
    real_lists = [[int(x[i]) for x in patterns[i % 4]] for i in range(NUM_EXAMPLES)]
    LABELS["imagenet2012_real"] = [
        {"original_label": 0, "real_label": labels} for labels in real_lists
    ]

    # Cue conflict: decision = shape, = texture, no conflict, or neither, in a fixed pattern.
    decision = shape_bias.category_predictions(
        model_logits(run, mock_root, "geirhos_conflict_stimuli", "test")
    )
    a, b = (decision + 1) % 16, (decision + 2) % 16
    kinds = ["shape", "shape", "shape", "texture", "agree", "neither"]
    pairs = {
        "shape": (decision, a),
        "texture": (a, decision),
        "agree": (decision, decision),
        "neither": (a, b),
    }
    LABELS["geirhos_conflict_stimuli"] = [
        {
            "shape_label": int(pairs[kinds[i % 6]][0][i]),
            "texture_label": int(pairs[kinds[i % 6]][1][i]),
        }
        for i in range(NUM_EXAMPLES)
    ]

    with mocked(mock_root):
        ood_eval.check_ready(trainer, ["imagenet_r", "imagenet2012_real", "shape_bias"])
        results = ood_eval.evaluate(
            trainer, params, ["imagenet_r", "imagenet2012_real", "shape_bias"]
        )

    assert set(results) == {"ood", "shape_bias"}
    assert json.loads(json.dumps(results)) == results  # Plain ints, floats and strings.
    expected_r = int(np.sum(masked == r_labels))
    assert expected_r == NUM_EXAMPLES // 2
    assert results["ood"]["imagenet_r"] == {
        "top1": expected_r / NUM_EXAMPLES,
        "correct": expected_r,
        "counted": NUM_EXAMPLES,
        "tfds_name": "imagenet_r",
        "split": "test",
    }
    labelled = [i for i, labels in enumerate(real_lists) if labels]
    real_hits = sum(int(top[i]) in real_lists[i] for i in labelled)
    assert (real_hits, len(labelled)) == (6, 9)  # 3 unlabelled images were left out.
    real = results["ood"]["imagenet2012_real"]
    assert (real["correct"], real["counted"], real["top1"]) == (6, 9, 6 / 9)
    assert (real["tfds_name"], real["split"]) == ("imagenet2012_real", "validation")
    count = {kind: sum(kinds[i % 6] == kind for i in range(NUM_EXAMPLES)) for kind in pairs}
    assert results["shape_bias"] == {
        "shape_bias": count["shape"] / (count["shape"] + count["texture"]),
        "shape_hits": count["shape"],
        "texture_hits": count["texture"],
        "conflict_images": NUM_EXAMPLES - count["agree"],
    }
    assert ood_eval.scalars(results) == {
        "ood/imagenet_r/top1": 0.5,
        "ood/imagenet2012_real/top1": 6 / 9,
        "shape_bias": 0.75,
    }


# tiny_experiment() as gin bindings, for harness.evaluate.
TINY_GIN = [
    "ModelSpec.family = 'vit'",
    f"VitSpec.image_size = {SIZE}",
    "VitSpec.patch_size = 8",
    "VitSpec.num_classes = 1000",
    "VitSpec.model_dims = 32",
    "VitSpec.num_layers = 1",
    "VitSpec.mlp_dims = 64",
    "VitSpec.num_heads = 2",
    f"DataSpec.image_size = {SIZE}",
    "DataSpec.batch_size = 8",
    "DataSpec.eval_batch_size = 8",
]


@pytest.mark.slow
def test_training_and_evaluating_a_run_record_the_same_ood_results(mock_root, tmp_path):
    from harness.train.trainer import Trainer

    LABELS["imagenet_r"] = [{"label": IMAGENET_R_CLASSES[i]} for i in range(NUM_EXAMPLES)]
    names = ("imagenet_r", "shape_bias")
    run_dir, evaluated = str(tmp_path / "run"), str(tmp_path / "evaluated")
    with mocked(mock_root):
        trainer = Trainer(tiny_experiment(eval_datasets=names), run_dir, (8, 1, 1))
        outcome = trainer.run()
        try:
            payload = evaluate_lib.evaluate_checkpoint(
                ["gin/data/imagenet2012.gin"],
                [*TINY_GIN, f"TrainSpec.eval_datasets = {names}"],
                run_dir,
                evaluated,
            )
        finally:
            gin.clear_config()
    row = outcome["ood"]["imagenet_r"]
    assert row["counted"] == NUM_EXAMPLES and row["top1"] == row["correct"] / NUM_EXAMPLES
    assert set(outcome["shape_bias"]) == {
        "shape_bias",
        "shape_hits",
        "texture_hits",
        "conflict_images",
    }
    # The same weights imported by harness.evaluate give the same numbers.
    np.testing.assert_equal(payload["ood"], outcome["ood"])
    np.testing.assert_equal(payload["shape_bias"], outcome["shape_bias"])
    with open(os.path.join(evaluated, "results.json")) as f:
        np.testing.assert_equal(json.load(f)["ood"], outcome["ood"])
    for workdir, step in [(run_dir, 2), (evaluated, 0)]:
        scalars = events.read_scalars(workdir)
        assert scalars["ood/imagenet_r/top1"] == [(step, pytest.approx(row["top1"]))]
        assert [logged for logged, _ in scalars["shape_bias"]] == [step]


@pytest.mark.parametrize(
    "name, tfds_name, split, label_key, classes",
    [
        ("imagenet_v2", "imagenet_v2", "test", "label", 1000),
        ("imagenet_r", "imagenet_r", "test", "label", 1000),
        ("imagenet_a", "imagenet_a", "test", "label", 1000),
        ("imagenet_sketch", "imagenet_sketch", "test", "label", 1000),
        ("imagenet2012_real", "imagenet2012_real", "validation", "original_label", 1000),
        ("geirhos_conflict_stimuli", "geirhos_conflict_stimuli", "test", "shape_label", 16),
    ],
)
def test_gin_data_files_make_the_set_the_eval_split(
    mock_root, name, tfds_name, split, label_key, classes
):
    gin.clear_config()
    try:
        gin.parse_config_files_and_bindings(
            [os.path.join(project.REPO_ROOT, "gin", "data", f"{name}.gin")], []
        )
        config = DataSpec()
    finally:
        gin.clear_config()
    assert (config.dataset, config.eval_split, config.label_key) == (tfds_name, split, label_key)
    with mocked(mock_root):
        info = metadata.dataset_info(config)
    assert info.num_classes == classes and info.image_shape == (224, 224, 3)


# --- Bad input: one line, before any work --------------------------------------------------------


def test_unknown_or_repeated_names_are_refused_by_the_spec():
    with pytest.raises(ValueError, match=r"TrainSpec.eval_datasets has unknown 'imagenet_c'"):
        TrainSpec(eval_datasets=("imagenet_r", "imagenet_c"))
    with pytest.raises(ValueError, match=r"names 'imagenet_r' twice"):
        TrainSpec(eval_datasets=["imagenet_r", "imagenet_r"])
    assert TrainSpec(eval_datasets=["shape_bias"]).eval_datasets == ("shape_bias",)


def test_cli_refuses_an_unknown_set_in_one_line(tmp_path):
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.evaluate",
            "--gin_file=gin/cpu/vit.gin",
            "--checkpoint=none",
            f"--workdir={tmp_path / 'out'}",
            "--eval_datasets=imagenet_r,imagenet_c",
        ],
        capture_output=True,
        text=True,
        cwd=project.REPO_ROOT,
        timeout=120,
    )
    assert process.returncode == 2, process.stderr
    assert process.stderr.strip().splitlines() == [
        "error: --eval_datasets has unknown 'imagenet_c'; choose from imagenet_v2, imagenet_r, "
        "imagenet_a, imagenet_sketch, imagenet2012_real, shape_bias"
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(
    not fashion_mnist_local.idx_files_present(fashion_mnist_local.DEFAULT_IDX_DIR),
    reason="needs the embedded Fashion-MNIST (make setup)",
)
def test_a_model_without_1000_classes_is_refused_before_the_checkpoint_is_read(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UsageError) as caught:
        try:
            evaluate_lib.evaluate_checkpoint(
                ["gin/cpu/vit.gin"],
                ["TrainSpec.eval_datasets=('imagenet_r',)"],
                str(tmp_path / "no_such_checkpoint"),
                str(out),
            )
        finally:
            gin.clear_config()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("eval dataset 'imagenet_r' needs a 1000-class ImageNet model")
    assert "VitSpec.num_classes=10" in message
    assert not out.exists()


@pytest.mark.skipif(
    not fashion_mnist_local.idx_files_present(fashion_mnist_local.DEFAULT_IDX_DIR),
    reason="needs the embedded Fashion-MNIST (make setup)",
)
def test_training_a_model_without_1000_classes_is_refused_before_it_starts(tmp_path):
    workdir = tmp_path / "run"
    with pytest.raises(UsageError, match=r"^eval dataset 'shape_bias' needs a 1000-class"):
        try:
            bindings = ["TrainSpec.eval_datasets=['shape_bias']"]
            launch.train(["gin/cpu/vit.gin"], bindings, str(workdir))
        finally:
            gin.clear_config()
    assert not workdir.exists()


@pytest.mark.parametrize(
    "name, fix",
    [
        ("imagenet_r", "run 'tfds build imagenet_r --data_dir={}'"),
        ("shape_bias", "run 'tfds build geirhos_conflict_stimuli --data_dir={}'"),
        (
            "imagenet2012_real",
            "downloads/manual and run 'tfds build imagenet2012_real --data_dir={}'",
        ),
    ],
)
def test_an_unprepared_set_names_itself_and_how_to_prepare_it(run, tmp_path, name, fix):
    trainer = copy.copy(run[0])
    data = dataclasses.replace(trainer.experiment.data, data_dir=str(tmp_path))
    trainer.experiment = dataclasses.replace(trainer.experiment, data=data)
    with pytest.raises(UsageError) as caught:
        ood_eval.check_ready(trainer, [name])
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"eval dataset {name!r}: ")
    assert fix.format(tmp_path) in message
    assert os.listdir(tmp_path) == []  # Nothing downloaded or written.


def test_eval_datasets_survive_experiment_json_and_may_change_on_resume():
    experiment = tiny_experiment(eval_datasets=("imagenet_r", "shape_bias"))
    stored = json.loads(json.dumps(experiment_file.experiment_to_data(experiment)))
    assert stored["train"]["eval_datasets"] == ["imagenet_r", "shape_bias"]
    assert experiment_file.spec_from_data(Experiment, stored, "experiment") == experiment
    # Which OOD sets a run is scored on at the end is not part of what it trains.
    assert resume.first_difference(experiment, tiny_experiment()) is None
    other_seed = tiny_experiment(seed=1)
    assert resume.first_difference(experiment, other_seed) == ("TrainSpec.seed", 0, 1)
