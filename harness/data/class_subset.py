"""Training and evaluating on a subset of a dataset's classes (DataSpec.classes).

Examples whose label is not in `classes` are dropped, and label `classes[i]` becomes i, the
convention of harness.data.fewshot_datasets.filter_classes, so a held-out-class pretraining
run and the few-shot probe of the other classes number labels the same way.

The split sizes of a subset are not in TFDS's metadata, so `count` reads the split's labels
once (the image feature is never decoded) and remembers the answer for the process.
"""

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from harness.data.spec import DataSpec


def keep_and_relabel(
    ds: tf.data.Dataset, classes: tuple[int, ...], num_classes: int
) -> tf.data.Dataset:
    """(image, label) pairs of `ds` whose label is in `classes`, labels renumbered 0..k-1.

    `num_classes` is the dataset's class count; every label of `ds` and of `classes` is below it.
    """
    mapping = np.full(num_classes, -1, np.int64)  # Old label -> new one, -1 for dropped ones.
    mapping[list(classes)] = np.arange(len(classes))
    new_label = tf.constant(mapping)
    ds = ds.filter(lambda image, label: tf.gather(new_label, label) >= 0)
    return ds.map(lambda image, label: (image, tf.gather(new_label, label)))


# (dataset, data_dir, split, classes) -> count; a builder is not hashable, so no lru_cache.
_COUNTS: dict[tuple[str, str, str, tuple[int, ...]], int] = {}


def count(config: DataSpec, builder: tfds.core.DatasetBuilder, split: str, label_key: str) -> int:
    """How many examples of `split` have a label in config.classes."""
    assert config.classes is not None
    key = (config.dataset, str(builder.data_dir), split, config.classes)
    if key not in _COUNTS:
        ds = builder.as_dataset(
            split=split,
            shuffle_files=False,
            decoders=tfds.decode.PartialDecoding({label_key: True}),
        )
        labels = np.concatenate(
            [batch[label_key] for batch in tfds.as_numpy(ds.batch(65_536))] or [np.zeros(0)]
        )
        _COUNTS[key] = int(np.isin(labels, config.classes).sum())
    return _COUNTS[key]
