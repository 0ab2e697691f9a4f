"""Training and evaluating on a subset of a dataset's classes (DataSpec.classes).

Examples whose label is not in `classes` are dropped, and label `classes[i]` becomes i, the
convention of harness.transfer.fewshot_datasets.filter_classes, so a held-out-class pretraining
run and the few-shot probe of the other classes number labels the same way.

The split sizes of a subset are not in TFDS's metadata, so `count` reads the split's labels
once (the image feature is never decoded) and remembers the answer for the process.
"""

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from harness.data.spec import DataSpec


def _relabelling(classes: tuple[int, ...]) -> tf.Tensor:
    """int64 [max(classes) + 1]: the new label of each old one, -1 for the dropped ones."""
    mapping = np.full(max(classes) + 1, -1, np.int64)
    mapping[list(classes)] = np.arange(len(classes))
    return tf.constant(mapping)


def keep_and_relabel(ds: tf.data.Dataset, classes: tuple[int, ...]) -> tf.data.Dataset:
    """(image, label) pairs of `ds` whose label is in `classes`, labels renumbered 0..k-1."""
    mapping = _relabelling(classes)
    size = tf.shape(mapping, out_type=tf.int64)[0]

    def new_label(label: tf.Tensor) -> tf.Tensor:
        # Labels past the mapping's end are dropped classes too; clamp before the gather.
        label = tf.cast(label, tf.int64)
        inside = label < size
        return tf.where(inside, tf.gather(mapping, tf.minimum(label, size - 1)), -1)

    ds = ds.filter(lambda image, label: new_label(label) >= 0)
    return ds.map(lambda image, label: (image, new_label(label)))


def count(config: DataSpec, builder: tfds.core.DatasetBuilder, split: str, label_key: str) -> int:
    """How many examples of `split` have a label in config.classes."""
    assert config.classes is not None
    return _count(config.dataset, str(builder.data_dir), split, config.classes, builder, label_key)


# (dataset, data_dir, split, classes) -> count; a builder is not hashable, so no lru_cache.
_COUNTS: dict[tuple[str, str, str, tuple[int, ...]], int] = {}


def _count(
    dataset: str,
    data_dir: str,
    split: str,
    classes: tuple[int, ...],
    builder: tfds.core.DatasetBuilder,
    label_key: str,
) -> int:
    key = (dataset, data_dir, split, classes)
    if key not in _COUNTS:
        ds = builder.as_dataset(
            split=split,
            shuffle_files=False,
            decoders=tfds.decode.PartialDecoding({label_key: True}),
        )
        labels = np.concatenate(
            [batch[label_key] for batch in tfds.as_numpy(ds.batch(65_536))] or [np.zeros(0)]
        )
        _COUNTS[key] = int(np.isin(labels, classes).sum())
    return _COUNTS[key]
