"""The names `--eval_datasets` and `TrainSpec.eval_datasets` accept, and where each OOD set lives.

Light on purpose (no JAX or TensorFlow), since the training spec checks names when gin binds it.
The evaluation itself is harness/transfer/ood_eval.py.
"""

from collections.abc import Sequence
from typing import NamedTuple

from harness.data.imagenet_subsets import IMAGENET_A_CLASSES, IMAGENET_R_CLASSES


class OodDataset(NamedTuple):
    """Where a test set lives in TFDS and how it is scored."""

    tfds_name: str
    split: str  # The only split each of these has in TFDS.
    label_key: str
    # The ImageNet classes the logits are restricted to before the argmax; None = all 1000.
    classes: tuple[int, ...] | None = None
    # True: `label_key` holds a list of labels per image, scored by `real_correct`.
    multi_label: bool = False


OOD_DATASETS: dict[str, OodDataset] = {
    # TFDS's default config is 'matched-frequency', the variant the papers report.
    "imagenet_v2": OodDataset("imagenet_v2", "test", "label"),
    "imagenet_r": OodDataset("imagenet_r", "test", "label", classes=IMAGENET_R_CLASSES),
    "imagenet_a": OodDataset("imagenet_a", "test", "label", classes=IMAGENET_A_CLASSES),
    "imagenet_sketch": OodDataset("imagenet_sketch", "test", "label"),
    "imagenet2012_real": OodDataset(
        "imagenet2012_real", "validation", "real_label", multi_label=True
    ),
}


SHAPE_BIAS = "shape_bias"  # Geirhos cue-conflict shape bias (harness/transfer/shape_bias.py).
EVAL_DATASETS = (*OOD_DATASETS, SHAPE_BIAS)


def check_eval_datasets(names: Sequence[str], where: str) -> None:
    """Raises ValueError (one line naming `where`) on an unknown or repeated name."""
    unknown = [name for name in names if name not in EVAL_DATASETS]
    if unknown:
        raise ValueError(
            f"{where} has unknown {unknown[0]!r}; choose from {', '.join(EVAL_DATASETS)}"
        )
    repeated = sorted({name for name in names if list(names).count(name) > 1})
    if repeated:
        raise ValueError(f"{where} names {repeated[0]!r} twice; give each set once")
