"""What a dataset is, from TFDS metadata alone: its classes, image shape and split sizes, and
whether it is prepared (saying how to prepare it when not).

Reading a prepared dataset's metadata needs tensorflow_datasets but not TensorFlow, so
commands check a config's data (harness.config.experiment.check_data) in about a second, before
they load TensorFlow for the input pipeline (harness/data/pipeline.py). Preparing the embedded
Fashion-MNIST on first use, and counting the examples of a class subset, do load it.
"""

import fcntl
import os
from typing import NamedTuple

import tensorflow_datasets as tfds

from harness.data.datasets import fashion_mnist_local
from harness.data.spec import DataSpec
from harness.data.synthetic_spec import SYNTHETIC
from harness.errors import UsageError

DEFAULT_VARIABLE_SIZE = 224  # Target size for datasets whose images vary in size (ImageNet).


class DatasetNotFoundError(UsageError):
    """The dataset is unknown or not prepared in the data_dir; the message says how to get it."""


class DataInfo(NamedTuple):
    """What models and trainers need to know about the data, read from metadata only."""

    num_classes: int
    image_shape: tuple[int, int, int]  # (H, W, C) of the batches, after preprocessing.
    num_train_examples: int
    num_eval_examples: int


def dataset_info(config: DataSpec) -> DataInfo:
    """Classes, batch image shape and split sizes, from TFDS metadata without reading examples.

    Like the batch functions, it prepares `fashion_mnist` on first use (about 15 s, once per
    data_dir) and raises DatasetNotFoundError for any other dataset that is not prepared.
    """
    if config.dataset == SYNTHETIC:  # Its batches come from harness.data.synthetic, on device.
        synthetic = config.synthetic
        if config.image_size is None or None in (synthetic.num_classes, synthetic.num_channels):
            raise ValueError(
                "synthetic data needs its shape resolved from the model first "
                "(harness.data.spec.shaped_like_model)"
            )
        return DataInfo(
            num_classes=synthetic.num_classes,
            image_shape=(config.image_size, config.image_size, synthetic.num_channels),
            num_train_examples=synthetic.num_train_examples,
            num_eval_examples=synthetic.num_eval_examples,
        )
    builder = prepared_builder(config)
    image_key, label_key = feature_keys(builder, config)
    channels = builder.info.features[image_key].shape[-1]
    height, width = output_size(config, builder)
    num_train = split_size(builder, config.train_split, "train_split")
    eval_split = eval_split_of(config, builder)
    num_eval = split_size(builder, eval_split, "eval_split")
    if config.classes is None:
        num_classes = num_classes_of(builder, label_key)
    else:
        from harness.data import class_subset  # counts by reading labels: TensorFlow

        check_classes_exist(config, builder)
        num_classes = len(config.classes)
        num_train = class_subset.count(config, builder, config.train_split, label_key)
        num_eval = class_subset.count(config, builder, eval_split, label_key)
    return DataInfo(
        num_classes=num_classes,
        image_shape=(height, width, channels),
        num_train_examples=num_train,
        num_eval_examples=num_eval,
    )


def check_classes_exist(config: DataSpec, builder: tfds.core.DatasetBuilder) -> int:
    """The dataset's class count, after checking that DataSpec.classes are below it."""
    num_classes = num_classes_of(builder, feature_keys(builder, config)[1])
    too_large = [c for c in config.classes or () if c >= num_classes]
    if too_large:
        raise UsageError(
            f"DataSpec.classes={config.classes} has {too_large}, but {builder.name} has labels "
            f"0..{num_classes - 1}; keep labels below {num_classes}"
        )
    return num_classes


def split_size(builder: tfds.core.DatasetBuilder, split: str, field: str) -> int:
    try:
        return builder.info.splits[split].num_examples
    except (KeyError, ValueError, AssertionError) as error:
        raise UsageError(
            f"DataSpec.{field}={split!r} is not a split of {builder.name} (it has "
            f"{sorted(builder.info.splits)}); give one of them, optionally sliced as 'train[:10%]'"
        ) from error


def prepared_builder(config: DataSpec) -> tfds.core.DatasetBuilder:
    """The prepared builder for config.dataset, or DatasetNotFoundError saying how to prepare it."""
    if config.dataset == "fashion_mnist":
        return _fashion_mnist_builder(config.data_dir)
    try:
        builder = tfds.builder(config.dataset, data_dir=config.data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise DatasetNotFoundError(
            f"unknown TFDS dataset DataSpec.dataset={config.dataset!r}; use a TFDS name such "
            "as 'fashion_mnist', 'cifar10', 'cifar100' or 'imagenet2012'"
        ) from error
    # is_prepared only looks at the files: no download is ever attempted from here.
    if not builder.is_prepared():
        raise DatasetNotFoundError(_how_to_prepare(config.dataset, str(builder.data_dir_root), ""))
    return builder


def _fashion_mnist_builder(data_dir: str | None) -> tfds.core.DatasetBuilder:
    builder = fashion_mnist_local.FashionMnistLocal(data_dir=data_dir)
    if builder.is_prepared():
        return builder
    root = str(builder.data_dir_root)
    if not fashion_mnist_local.idx_files_present(builder.idx_dir):
        raise DatasetNotFoundError(_how_to_prepare("fashion_mnist", root, builder.idx_dir))
    # Processes of one job on one machine would otherwise all prepare into the same directory at
    # once; the lock makes the first prepare it and the others wait, then read it.
    try:
        os.makedirs(root, exist_ok=True)
        with open(os.path.join(root, ".fashion_mnist.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return fashion_mnist_local.prepare(data_dir)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    except OSError as error:
        raise DatasetNotFoundError(
            f"fashion_mnist is not prepared in DataSpec.data_dir={root!r} and cannot be "
            f"prepared there ({' '.join(str(error).split())}); set DataSpec.data_dir to a "
            "writable directory"
        ) from error


def _how_to_prepare(dataset: str, data_dir: str, idx_dir: str) -> str:
    where = f"dataset {dataset!r} is not prepared in data_dir {data_dir}"
    set_dir = "or point --gin_param=\"DataSpec.data_dir='/path'\" at a prepared copy"
    if dataset == "fashion_mnist":
        return (
            f"{where} and its IDX files are not in {idx_dir}; run "
            "'sudo apt-get install dataset-fashion-mnist' (or 'make setup'), or, online, "
            f"'python -m harness.datasets.fashion_mnist_local --data_dir={data_dir}'"
        )
    if dataset.startswith("imagenet2012"):
        return (
            f"{where}; put ILSVRC2012_img_val.tar (and ILSVRC2012_img_train.tar to train; "
            f"from image-net.org) in {data_dir}/downloads/manual and run 'tfds build "
            f"{dataset.split(':')[0]} --data_dir={data_dir}', {set_dir}"
        )
    return (
        f"{where}; run 'tfds build {dataset} --data_dir={data_dir}' on a machine with internet "
        f"access, {set_dir}"
    )


# --- Reading the metadata ------------------------------------------------------------------------


def feature_keys(
    builder: tfds.core.DatasetBuilder, config: DataSpec | None = None
) -> tuple[str, str]:
    """(image feature, label feature): the supervised keys, DataSpec.label_key overriding."""
    keys = builder.info.supervised_keys
    image_key, label_key = (keys[0], keys[1]) if keys and len(keys) == 2 else ("image", "label")
    if config is not None and config.label_key is not None:
        label_key = config.label_key
    return image_key, label_key


def num_classes_of(builder: tfds.core.DatasetBuilder, label_key: str) -> int:
    class_labels = {
        name: feature
        for name, feature in builder.info.features.items()
        if isinstance(feature, tfds.features.ClassLabel)
    }
    if label_key not in class_labels:
        raise UsageError(
            f"{builder.name} has no single class label {label_key!r}; set DataSpec.label_key to "
            f"one of {sorted(class_labels)}"
        )
    return class_labels[label_key].num_classes


def variable_size(builder: tfds.core.DatasetBuilder) -> bool:
    height, width, _ = builder.info.features[feature_keys(builder)[0]].shape
    return height is None or width is None


def output_size(config: DataSpec, builder: tfds.core.DatasetBuilder) -> tuple[int, int]:
    if config.image_size is not None:
        if config.image_size < 1:
            raise UsageError(f"DataSpec.image_size={config.image_size} must be positive")
        return config.image_size, config.image_size
    if variable_size(builder):
        return DEFAULT_VARIABLE_SIZE, DEFAULT_VARIABLE_SIZE
    height, width, _ = builder.info.features[feature_keys(builder)[0]].shape
    return height, width


def eval_split_of(config: DataSpec, builder: tfds.core.DatasetBuilder) -> str:
    if config.eval_split is not None:
        return config.eval_split
    for name in ("test", "validation"):
        if name in builder.info.splits:
            return name
    raise UsageError(
        f"dataset {config.dataset!r} has no 'test' or 'validation' split (it has "
        f"{sorted(builder.info.splits)}); set DataSpec.eval_split"
    )
