"""Input pipeline: TFDS image-classification datasets as per-process numpy batches for JAX.

Every dataset goes through TFDS. `fashion_mnist`, the embedded default, is prepared on first
use from Debian's IDX files by `harness.data.datasets.fashion_mnist_local`; every other dataset
must already be prepared in `DataSpec.data_dir`, since nothing here downloads. Batches are numpy
dicts: 'image' float32 [b, H, W, C] in [-1, 1], 'label' int32 [b] and, for eval only, 'mask'
float32 [b].
`b` is the part of the global batch that one input shard holds: the trainer splits the input
into shards by the mesh (harness/runtime/batch_layout.py), so processes holding the same batch
rows read the same shard, and assembles the global array.
"""

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from harness.data import class_subset, metadata
from harness.data.spec import AUGMENTATIONS, DataSpec
from harness.errors import UsageError

# TensorFlow is only the input pipeline: keep it off any GPU so JAX owns the accelerator memory.
with contextlib.suppress(RuntimeError):  # Raised if TF already initialised its devices.
    tf.config.set_visible_devices([], "GPU")

_CENTRAL_CROP_FRACTION = 0.875  # Eval crop of variable-size images: 224 out of 256, as usual.


def train_batches(
    config: DataSpec, shard_index: int = 0, shard_count: int = 1, seed: int = 0
) -> Iterator[dict[str, np.ndarray]]:
    """Endless shuffled, augmented batches of input shard `shard_index` of the train split.

    Each shard is a disjoint, near-equal slice of the split (tfds.split_for_jax_process) and
    yields batch_size // shard_count examples per batch. Every epoch of a shard is one full,
    reshuffled pass, and augmentation is drawn per (seed, shard, example draw), so the stream
    is reproducible for a seed, the same for every process reading the shard, and the same
    image gets fresh augmentation each epoch.
    """
    local_batch = _local_batch(config.batch_size, "batch_size", shard_index, shard_count)
    builder = metadata.prepared_builder(config)
    image_key, label_key = metadata.feature_keys(builder, config)
    augment = _augmentation(config, builder)
    size = metadata.output_size(config, builder)
    jpeg = _is_jpeg(builder, image_key)
    split = tfds.split_for_jax_process(
        config.train_split, process_index=shard_index, process_count=shard_count
    )
    shard_seed = seed * 1_000_003 + shard_index  # Distinct file order per shard.
    ds = builder.as_dataset(
        split=split,
        shuffle_files=True,
        decoders=_decoders(jpeg, image_key),
        read_config=tfds.ReadConfig(shuffle_seed=shard_seed),
    )
    ds = ds.map(lambda ex: (ex[image_key], ex[label_key]), num_parallel_calls=tf.data.AUTOTUNE)
    if config.classes is not None:
        num_classes = metadata.check_classes_exist(config, builder)
        ds = class_subset.keep_and_relabel(ds, config.classes, num_classes)
    if config.cache:
        ds = ds.cache()
    # Shuffle before repeat: epochs stay whole (each example once per epoch), at the cost of a
    # refill of the buffer at each epoch boundary.
    ds = ds.shuffle(config.shuffle_buffer, seed=shard_seed, reshuffle_each_iteration=True)
    ds = ds.repeat().enumerate()
    base_rng = tf.constant([seed, shard_index], tf.int64)

    def preprocess(index: tf.Tensor, item: tuple[tf.Tensor, tf.Tensor]) -> dict[str, tf.Tensor]:
        image, label = item
        rng = tf.random.experimental.stateless_fold_in(base_rng, index)
        image = _train_image(image, rng, augment, size, jpeg, config.crop_padding)
        return {"image": _normalise(image), "label": tf.cast(label, tf.int32)}

    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.as_numpy_iterator()


def eval_batches(
    config: DataSpec,
    shard_index: int = 0,
    shard_count: int = 1,
    label_keys: Sequence[str] | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """One pass over input shard `shard_index` of the eval split in file order, padded to full
    batches.

    Padding examples are zeros with 'mask' 0; real ones have 'mask' 1. Every shard yields the
    same number of batches (enough for the largest shard), so multi-process eval steps stay in
    lockstep and sum(mask) over all shards is exactly the split size.

    `label_keys` (default: the dataset's label as 'label') names the label features to return,
    each under its own name, as int32. A feature holding a list of labels per image (ImageNet
    ReaL's 'real_label') is padded with -1 to the longest list in its batch.
    """
    eval_batch_size = config.eval_batch_size or config.batch_size
    local_batch = _local_batch(eval_batch_size, "eval_batch_size", shard_index, shard_count)
    builder = metadata.prepared_builder(config)
    image_key, label_key = metadata.feature_keys(builder, config)
    labels = {"label": label_key} if label_keys is None else {key: key for key in label_keys}
    size = metadata.output_size(config, builder)
    jpeg = _is_jpeg(builder, image_key)
    split_name = metadata.eval_split_of(config, builder)
    shards = tfds.even_splits(split_name, n=shard_count)
    if config.classes is None:
        largest_shard = max(builder.info.splits[shard].num_examples for shard in shards)
    else:
        num_classes = metadata.check_classes_exist(config, builder)
        largest_shard = max(class_subset.count(config, builder, s, label_key) for s in shards)
    num_batches = math.ceil(largest_shard / local_batch)
    ds = builder.as_dataset(
        split=shards[shard_index], shuffle_files=False, decoders=_decoders(jpeg, image_key)
    )
    if config.classes is not None:
        if labels != {"label": label_key}:
            raise UsageError(
                f"DataSpec.classes={config.classes} keeps one label per image; it cannot be "
                f"combined with the label features {sorted(labels)}; drop one of the two"
            )
        ds = ds.map(lambda ex: (ex[image_key], ex[label_key]), num_parallel_calls=tf.data.AUTOTUNE)
        ds = class_subset.keep_and_relabel(ds, config.classes, num_classes)
        ds = ds.map(lambda image, label: (image, {"label": label}))
    else:
        ds = ds.map(
            lambda ex: (ex[image_key], {name: ex[key] for name, key in labels.items()}),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    def preprocess(image: tf.Tensor, label_values: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {
            "image": _normalise(_eval_image(image, size, jpeg)),
            **{name: tf.cast(value, tf.int32) for name, value in label_values.items()},
            "mask": tf.constant(1.0, tf.float32),
        }

    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    # A padding example's label lists are empty (a dimension of unknown length becomes 0).
    padding = tf.data.Dataset.from_tensors(
        tf.nest.map_structure(
            lambda spec: tf.zeros([d or 0 for d in spec.shape], spec.dtype), ds.element_spec
        )
    ).repeat()
    ds = ds.concatenate(padding).take(num_batches * local_batch)
    # Only label lists have a dimension to pad; -1 is never a class.
    fill = tf.nest.map_structure(
        lambda spec: tf.constant(-1 if spec.dtype.is_integer else 0, spec.dtype), ds.element_spec
    )
    ds = ds.padded_batch(local_batch, padding_values=fill, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


# --- Finding the dataset -------------------------------------------------------------------------


def _augmentation(config: DataSpec, builder: tfds.core.DatasetBuilder) -> str:
    if config.augment not in AUGMENTATIONS:
        raise UsageError(f"DataSpec.augment={config.augment!r} is not one of {AUGMENTATIONS}")
    if config.augment != "auto":
        return config.augment
    if metadata.variable_size(builder):
        return "inception_crop_flip"
    return "pad_crop_flip" if config.dataset.startswith("cifar") else "none"


def _is_jpeg(builder: tfds.core.DatasetBuilder, image_key: str) -> bool:
    return getattr(builder.info.features[image_key], "encoding_format", None) == "jpeg"


def _decoders(jpeg: bool, image_key: str) -> dict[str, Any] | None:
    # JPEGs stay encoded so that crops decode only the window they keep (decode_and_crop_jpeg):
    # for ImageNet that is most of the input pipeline's CPU time.
    return {image_key: tfds.decode.SkipDecoding()} if jpeg else None


def _local_batch(global_batch: int, name: str, shard_index: int, shard_count: int) -> int:
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index={shard_index} must be in [0, shard_count={shard_count})")
    if global_batch < shard_count or global_batch % shard_count:
        raise ValueError(
            f"DataSpec.{name}={global_batch} is not divisible by the {shard_count} input shards "
            f"of the mesh; use a multiple of {shard_count}"
        )
    return global_batch // shard_count


# --- Preprocessing -------------------------------------------------------------------------------


def _normalise(image: tf.Tensor) -> tf.Tensor:
    # Clip because antialiased resizing can overshoot [0, 255] by a hair.
    return tf.clip_by_value(tf.cast(image, tf.float32) / 127.5 - 1.0, -1.0, 1.0)


def _decode(image: tf.Tensor, jpeg: bool) -> tf.Tensor:
    return tf.io.decode_jpeg(image, channels=3) if jpeg else image


def _image_shape(image: tf.Tensor, jpeg: bool) -> tf.Tensor:
    return tf.image.extract_jpeg_shape(image) if jpeg else tf.shape(image)


def _crop(image: tf.Tensor, jpeg: bool, top: Any, left: Any, height: Any, width: Any) -> tf.Tensor:
    if jpeg:
        return tf.io.decode_and_crop_jpeg(image, tf.stack([top, left, height, width]), channels=3)
    return tf.image.crop_to_bounding_box(image, top, left, height, width)


def _resize(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    if image.shape[0] == size[0] and image.shape[1] == size[1]:
        return image  # Native size (Fashion-MNIST at 28, CIFAR at 32): keep the exact pixels.
    return tf.image.resize(image, size, method="bilinear", antialias=True)


def _central_crop_resize(image: tf.Tensor, size: tuple[int, int], jpeg: bool) -> tf.Tensor:
    """Central square of 87.5% of the short side, resized: ImageNet-style eval framing."""
    shape = _image_shape(image, jpeg)
    height, width = shape[0], shape[1]
    side = tf.cast(
        tf.cast(tf.minimum(height, width), tf.float32) * _CENTRAL_CROP_FRACTION, tf.int32
    )
    side = tf.maximum(side, 1)
    top, left = (height - side) // 2, (width - side) // 2
    return _resize(_crop(image, jpeg, top, left, side, side), size)


def _eval_image(image: tf.Tensor, size: tuple[int, int], jpeg: bool) -> tf.Tensor:
    if jpeg or image.shape[0] is None or image.shape[1] is None:
        return _central_crop_resize(image, size, jpeg)
    return _resize(image, size)


def _inception_crop(image: tf.Tensor, rng: tf.Tensor, jpeg: bool) -> tf.Tensor:
    """Random crop of 8%-100% of the area with aspect ratio in [3/4, 4/3] (Szegedy et al.)."""
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        _image_shape(image, jpeg),
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
        seed=rng,
        min_object_covered=0.08,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return _crop(image, jpeg, begin[0], begin[1], crop_size[0], crop_size[1])


def _train_image(
    image: tf.Tensor,
    rng: tf.Tensor,
    augment: str,
    size: tuple[int, int],
    jpeg: bool,
    padding: int,
) -> tf.Tensor:
    crop_rng, flip_rng = tf.unstack(tf.random.experimental.stateless_split(rng, num=2))
    if augment == "inception_crop_flip":
        image = _resize(_inception_crop(image, crop_rng, jpeg), size)
    else:
        image = _eval_image(image, size, jpeg)
        if augment in ("pad_crop", "pad_crop_flip"):
            channels = image.shape[-1]
            padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
            image = tf.image.stateless_random_crop(padded, (*size, channels), seed=crop_rng)
    if augment.endswith("_flip"):
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_rng)
    return image
