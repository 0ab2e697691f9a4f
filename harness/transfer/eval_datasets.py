"""The names `--eval_datasets` and `TrainSpec.eval_datasets` accept.

Light on purpose (no JAX or TensorFlow), since the training spec checks names when gin binds it.
The evaluation itself is harness/transfer/ood_eval.py.
"""

from collections.abc import Sequence

from harness.transfer.ood import OOD_DATASETS

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
