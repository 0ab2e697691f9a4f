"""The data layer: the offline Fashion-MNIST builder and the TFDS input pipeline.

Fashion-MNIST tests prepare the real dataset once per session into a temporary data_dir (about
15 s) and compare it with an independent parse of Debian's IDX files. CIFAR-10 and ImageNet run
through `tfds.testing.mock_data`, with metadata written by the `mock_dir` fixture so that split
sizes are known, as they are for a prepared dataset.
"""

import collections
import dataclasses
import gzip
import hashlib
import os

import gin
import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import mnist

from harness.data import metadata, pipeline
from harness.data.datasets import fashion_mnist_local
from harness.data.spec import DataSpec
from harness.errors import UsageError
from tests import mock_tfds

IDX_DIR = fashion_mnist_local.DEFAULT_IDX_DIR
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_idx = pytest.mark.skipif(
    not fashion_mnist_local.idx_files_present(IDX_DIR),
    reason=f"{IDX_DIR} missing: run `make setup` (Debian package dataset-fashion-mnist)",
)


def parse_idx(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The IDX format read straight from its spec: 16-byte image header, 8-byte label header."""
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(os.path.join(IDX_DIR, f"{prefix}-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read()[16:], np.uint8).reshape(-1, 28, 28, 1)
    with gzip.open(os.path.join(IDX_DIR, f"{prefix}-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read()[8:], np.uint8)
    return images, labels


def tfds_disk_order(split: str, n: int) -> list[int]:
    # TFDS writes examples sorted by md5(split name + str(key)). Reproducing that order from the
    # keys 0..n-1 and finding it on disk shows the keys are the indices, as in TFDS's builder.
    salt = hashlib.md5(split.encode())

    def key_hash(index: int) -> int:
        md5 = salt.copy()
        md5.update(str(index).encode())
        return int(md5.hexdigest(), 16)

    return sorted(range(n), key=key_hash)


def read_all(builder: tfds.core.DatasetBuilder, split: str) -> tuple[np.ndarray, np.ndarray]:
    ds = builder.as_dataset(split=split, shuffle_files=False, batch_size=-1)
    arrays = tfds.as_numpy(ds)
    return arrays["image"], arrays["label"]


def first_epoch(iterator, batches: int) -> list[tuple[bytes, int]]:
    return [
        (image.tobytes(), int(label))
        for batch in (next(iterator) for _ in range(batches))
        for image, label in zip(batch["image"], batch["label"], strict=True)
    ]


@pytest.fixture(scope="session")
def fm_data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    fashion_mnist_local.prepare(data_dir)
    return data_dir


# --- The Fashion-MNIST builder -------------------------------------------------------------------


@needs_idx
@pytest.mark.slow
@pytest.mark.parametrize("split, count", [("train", 60_000), ("test", 10_000)])
def test_local_builder_equals_idx_files_in_tfds_order(fm_data_dir, split, count):
    builder = fashion_mnist_local.FashionMnistLocal(data_dir=fm_data_dir)
    assert builder.info.splits[split].num_examples == count
    images, labels = read_all(builder, split)
    idx_images, idx_labels = parse_idx(split)
    assert images.shape == (count, 28, 28, 1) and images.dtype == np.uint8
    assert len(idx_images) == count
    # Fashion-MNIST is balanced: 6000 (train) or 1000 (test) of each class.
    assert collections.Counter(labels.tolist()) == {c: count // 10 for c in range(10)}
    order = tfds_disk_order(split, count)
    np.testing.assert_array_equal(images, idx_images[order])
    np.testing.assert_array_equal(labels, idx_labels[order])
    position = {index: pos for pos, index in enumerate(order)}
    for index in (0, 1, 7, count // 2, count - 1):  # Spot checks by original IDX index.
        np.testing.assert_array_equal(images[position[index]], idx_images[index])
        assert labels[position[index]] == idx_labels[index]


@needs_idx
@pytest.mark.slow
def test_prepared_copy_is_tfds_fashion_mnist(fm_data_dir):
    # The standard registered builder reads the same directory: one copy for everyone.
    standard = tfds.builder("fashion_mnist", data_dir=fm_data_dir)
    assert type(standard) is mnist.FashionMNIST
    assert standard.is_prepared()
    assert str(standard.version) == str(mnist.FashionMNIST.VERSION)
    assert standard.info.features["label"].names == [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ]
    assert standard.info.features["image"].shape == (28, 28, 1)
    assert standard.info.supervised_keys == ("image", "label")


def test_local_builder_is_not_registered():
    assert tfds.builder_cls("fashion_mnist") is mnist.FashionMNIST
    assert "fashion_mnist_local" not in tfds.list_builders()


def test_builder_without_idx_files_falls_back_to_official_download():
    class RecordingDownloads:
        def __init__(self):
            self.urls = {}

        def download_and_extract(self, urls):
            self.urls = urls
            return {key: f"/downloaded/{key}" for key in urls}

    builder = fashion_mnist_local.FashionMnistLocal(data_dir="/nonexistent/tfds")
    builder.idx_dir = "/nonexistent/idx"
    downloads = RecordingDownloads()
    generators = builder._split_generators(downloads)
    assert sorted(downloads.urls.values()) == sorted(
        mnist.FashionMNIST.URL + name
        for name in (
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        )
    )
    assert [g.gen_kwargs["num_examples"] for g in generators] == [60_000, 10_000]


# --- The pipeline on real Fashion-MNIST ----------------------------------------------------------


@needs_idx
@pytest.mark.slow
def test_fashion_mnist_pipeline_defaults(fm_data_dir):
    config = DataSpec(data_dir=fm_data_dir, batch_size=16)
    assert metadata.dataset_info(config) == (10, (28, 28, 1), 60_000, 10_000)
    batch = next(pipeline.train_batches(config, seed=3))
    assert batch["image"].shape == (16, 28, 28, 1) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
    assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0
    # No augmentation by default: train images from the test split are, exactly, eval images.
    eval_images = {img.tobytes() for b in pipeline.eval_batches(config) for img in b["image"]}
    batch = next(pipeline.train_batches(dataclasses.replace(config, train_split="test"), seed=3))
    assert all(image.tobytes() in eval_images for image in batch["image"])


@needs_idx
@pytest.mark.slow
def test_eval_shards_are_disjoint_and_cover_the_split(fm_data_dir):
    config = DataSpec(data_dir=fm_data_dir, eval_split="test[:95]", eval_batch_size=30)
    whole = list(pipeline.eval_batches(config))  # One process: 30-example batches.
    assert [b["mask"].sum() for b in whole] == [30, 30, 30, 5]
    expected = np.concatenate([b["image"][b["mask"] == 1] for b in whole])
    assert len(expected) == 95
    per_process = [list(pipeline.eval_batches(config, i, 3)) for i in range(3)]
    # Shards of 32, 32 and 31 in batches of 10: 4 batches each, so processes stay in lockstep.
    assert [len(batches) for batches in per_process] == [4, 4, 4]
    real = [np.concatenate([b["image"][b["mask"] == 1] for b in bs]) for bs in per_process]
    assert [len(r) for r in real] == [32, 32, 31]
    np.testing.assert_array_equal(np.concatenate(real), expected)
    last = per_process[2][-1]
    np.testing.assert_array_equal(last["mask"], [1] * 1 + [0] * 9)
    assert not last["image"][1:].any() and not last["label"][1:].any()


@needs_idx
@pytest.mark.slow
def test_train_shards_are_disjoint_and_cover_the_split(fm_data_dir):
    config = DataSpec(
        data_dir=fm_data_dir, train_split="test[:90]", batch_size=30, shuffle_buffer=100
    )
    epochs = []
    for i in range(3):
        stream = pipeline.train_batches(config, i, 3, seed=0)
        epochs.append((first_epoch(stream, 3), first_epoch(stream, 3)))  # 30 = one shard epoch.
    everything = collections.Counter(
        (image.tobytes(), int(label))
        for b in pipeline.eval_batches(DataSpec(data_dir=fm_data_dir, eval_split="test[:90]"))
        for image, label, m in zip(b["image"], b["label"], b["mask"], strict=True)
        if m
    )
    assert sum(everything.values()) == 90
    assert collections.Counter(x for first, _ in epochs for x in first) == everything
    for first, second in epochs:
        assert sorted(first) == sorted(second)  # Whole epochs ...
        assert first != second  # ... reshuffled.


# --- CIFAR-10 and ImageNet through mock data -----------------------------------------------------


@pytest.fixture(scope="session")
def mock_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Metadata of prepared cifar10 (50/10) and imagenet2012 (50/10), without the data."""
    root = str(tmp_path_factory.mktemp("mock_tfds"))
    for name, splits in [("cifar10", ("train", "test")), ("imagenet2012", ("train", "validation"))]:
        mock_tfds.write_metadata(
            root, name, {split: 50 if split == "train" else 10 for split in splits}
        )
    return root


@pytest.mark.parametrize(
    "name, info",
    [("cifar10", (10, (32, 32, 3), 50, 10)), ("imagenet2012", (1000, (224, 224, 3), 50, 10))],
)
def test_dataset_info_from_metadata(mock_dir, name, info):
    with tfds.testing.mock_data(data_dir=mock_dir):
        assert metadata.dataset_info(DataSpec(dataset=name)) == info
        small = metadata.dataset_info(DataSpec(dataset=name, image_size=64))
        assert small.image_shape == (64, 64, 3)


@pytest.mark.parametrize("name, size", [("cifar10", 32), ("imagenet2012", 96)])
def test_train_batches_augment_each_draw(mock_dir, name, size):
    # One example repeated: every row of a batch is a fresh draw of the same image.
    config = DataSpec(dataset=name, image_size=size, batch_size=8, shuffle_buffer=4)
    with tfds.testing.mock_data(num_examples=1, data_dir=mock_dir):
        batch = next(pipeline.train_batches(config, seed=0))
        again = next(pipeline.train_batches(config, seed=0))
        other_seed = next(pipeline.train_batches(config, seed=1))
        evals = [next(pipeline.eval_batches(config))["image"][0] for _ in range(2)]
    assert batch["image"].shape == (8, size, size, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32
    assert -1.0 <= batch["image"].min() < batch["image"].max() <= 1.0
    assert len({image.tobytes() for image in batch["image"]}) > 1
    np.testing.assert_array_equal(batch["image"], again["image"])  # Reproducible per seed.
    assert not np.array_equal(batch["image"], other_seed["image"])
    np.testing.assert_array_equal(evals[0], evals[1])  # Eval is deterministic.


@pytest.mark.parametrize("name", ["cifar10", "imagenet2012"])
def test_eval_batches_pad_and_mask_the_last_batch(mock_dir, name):
    config = DataSpec(dataset=name, image_size=32, batch_size=8, eval_batch_size=4)
    with tfds.testing.mock_data(num_examples=10, data_dir=mock_dir):
        batches = list(pipeline.eval_batches(config))
        local = list(pipeline.eval_batches(config, shard_index=1, shard_count=2))
    assert [b["mask"].tolist() for b in batches] == [[1] * 4, [1] * 4, [1, 1, 0, 0]]
    assert all(b["image"].shape == (4, 32, 32, 3) for b in batches)
    assert all(b["mask"].dtype == np.float32 and b["label"].dtype == np.int32 for b in batches)
    assert not batches[-1]["image"][2:].any()
    real = np.concatenate([b["image"][:2] if i == 2 else b["image"] for i, b in enumerate(batches)])
    assert real.min() >= -1.0 and real.max() <= 1.0 and real.min() < real.max()
    # Two input shards: a shard of 5 in local batches of 2 gives 3 batches. (Mock data ignores
    # sub-splits, so which examples a shard holds is tested on real Fashion-MNIST above.)
    assert [b["image"].shape for b in local] == [(2, 32, 32, 3)] * 3


# --- Errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, fix",
    [
        ("cifar10", "tfds build cifar10 --data_dir="),
        ("imagenet2012", "/downloads/manual and run 'tfds build imagenet2012 --data_dir="),
    ],
)
def test_missing_dataset_names_the_fix(tmp_path, name, fix):
    with pytest.raises(metadata.DatasetNotFoundError) as error:
        pipeline.train_batches(DataSpec(dataset=name, data_dir=str(tmp_path)))
    message = str(error.value)
    assert isinstance(error.value, UsageError) and "\n" not in message
    assert f"{name!r}" in message and str(tmp_path) in message and fix in message
    assert "DataSpec.data_dir=" in message
    assert not os.listdir(tmp_path)  # Nothing was downloaded or written.


def test_missing_fashion_mnist_files_name_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist_local.FashionMnistLocal, "idx_dir", str(tmp_path / "no"))
    with pytest.raises(metadata.DatasetNotFoundError) as error:
        metadata.dataset_info(DataSpec(data_dir=str(tmp_path / "tfds")))
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "tfds") in message
    assert "apt-get install dataset-fashion-mnist" in message and "make setup" in message


def test_unknown_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(metadata.DatasetNotFoundError, match="'no_such_dataset'"):
        metadata.dataset_info(DataSpec(dataset="no_such_dataset", data_dir=str(tmp_path)))


def test_batch_must_divide_among_input_shards(mock_dir):
    config = DataSpec(dataset="cifar10", batch_size=10, eval_batch_size=12)
    with tfds.testing.mock_data(data_dir=mock_dir):
        with pytest.raises(ValueError, match=r"batch_size=10 is not divisible by the 4 input"):
            pipeline.train_batches(config, 0, 4)
        with pytest.raises(ValueError, match=r"eval_batch_size=12 .* 5 input shards"):
            pipeline.eval_batches(config, 0, 5)
        with pytest.raises(ValueError, match="shard_index=2"):
            pipeline.eval_batches(config, 2, 2)
        with pytest.raises(ValueError, match="augment='flip'"):  # the spec refuses it
            dataclasses.replace(config, augment="flip")


# --- Gin -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, size, eval_split",
    [
        ("fashion_mnist", 28, "test"),
        ("cifar10", 32, "test"),
        ("cifar100", 32, "test"),
        ("imagenet2012", 224, "validation"),
    ],
)
def test_gin_files_bind_the_config(name, size, eval_split):
    gin.clear_config()
    try:
        gin.parse_config_files_and_bindings(
            [os.path.join(REPO_ROOT, "gin", "data", f"{name}.gin")],
            ["DataSpec.data_dir = '/data/tfds'"],
        )
        config = DataSpec()
    finally:
        gin.clear_config()
    assert (config.dataset, config.image_size, config.eval_split) == (name, size, eval_split)
    assert config.data_dir == "/data/tfds"
    assert config.batch_size % 8 == 0 and config.eval_batch_size % 8 == 0
