"""Out-of-distribution ImageNet test sets, scored from a 1000-way ImageNet classifier's logits.

* ImageNet-V2 (Recht et al. 2019) and ImageNet-Sketch (Wang et al. 2019) use all 1000 classes:
  plain top-1 accuracy.
* ImageNet-R and ImageNet-A (Hendrycks et al. 2021) hold 200 of the 1000 classes. As in their
  authors' eval.py, the logits are restricted to those 200 before the argmax, so a model is not
  penalised for predicting a class the test set cannot contain. TFDS labels both with the
  1000-way ImageNet index, so the masked argmax is compared with the label as it is.
* ImageNet ReaL (Beyer et al. 2020, "Are we done with ImageNet?") relabels the 50,000 validation
  images with a set of plausible labels each: a prediction is correct if it is any of them, and
  images whose set is empty (no label agreed on) are left out of the count.

Everything works on numpy arrays; each scorer returns (correct, counted) so batches add up.
"""

from collections.abc import Sequence

import numpy as np

from harness.data.eval_datasets import OOD_DATASETS

NUM_IMAGENET_CLASSES = 1000


def mask_to_classes(logits: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """A copy of (N, 1000) logits with every class outside `classes` set to -inf."""
    logits = np.asarray(logits)
    masked = np.full(logits.shape, -np.inf, np.result_type(logits.dtype, np.float32))
    index = np.asarray(classes)
    masked[:, index] = logits[:, index]
    return masked


def predict(logits: np.ndarray, classes: Sequence[int] | None = None) -> np.ndarray:
    """(N,) predicted ImageNet index (0..999), chosen among `classes` when given."""
    if classes is not None:
        logits = mask_to_classes(logits, classes)
    return np.argmax(logits, axis=-1)


def top1_correct(
    logits: np.ndarray, labels: np.ndarray, classes: Sequence[int] | None = None
) -> tuple[int, int]:
    """(correct, counted) of single-label images; labels are 1000-way ImageNet indices."""
    labels = np.asarray(labels)
    return int(np.sum(predict(logits, classes) == labels)), int(labels.size)


def pad_label_lists(label_lists: Sequence[Sequence[int]], pad_value: int = -1) -> np.ndarray:
    """(N, L) array of variable-length label lists, padded with `pad_value` (L >= 1)."""
    width = max([len(labels) for labels in label_lists] + [1])
    padded = np.full((len(label_lists), width), pad_value, np.int64)
    for row, labels in enumerate(label_lists):
        padded[row, : len(labels)] = labels
    return padded


def real_correct(
    predictions: np.ndarray, real_labels: np.ndarray | Sequence[Sequence[int]]
) -> tuple[int, int]:
    """(correct, counted) under ReaL labels.

    Args:
      predictions: (N,) predicted ImageNet indices.
      real_labels: per image, its ReaL label list: either N sequences of any length (TFDS's
        'real_label' as read one example at a time) or an (N, L) array padded with negative
        values (as batched with tf padded_batch(padding_values=-1)).

    An image is correct if its prediction is one of its labels; images with no label are not
    counted.
    """
    if not isinstance(real_labels, np.ndarray) or real_labels.dtype == object:
        real_labels = pad_label_lists(list(real_labels))
    if real_labels.ndim == 1:  # One label per image.
        real_labels = real_labels[:, None]
    predictions = np.asarray(predictions).reshape(-1, 1)
    valid = real_labels >= 0
    labelled = valid.any(axis=1)
    hit = ((real_labels == predictions) & valid).any(axis=1)
    return int(np.sum(hit & labelled)), int(np.sum(labelled))


def score(dataset: str, logits: np.ndarray, labels: np.ndarray) -> tuple[int, int]:
    """(correct, counted) of a batch of an OOD_DATASETS test set, the way that set is scored."""
    spec = OOD_DATASETS[dataset]
    if spec.multi_label:
        return real_correct(predict(logits), labels)
    return top1_correct(logits, labels, spec.classes)
