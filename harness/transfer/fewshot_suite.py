"""Runs a FewShotSpec: every dataset, seed, shot count and l2, from features a caller extracts.

Feature extraction is the caller's (a CLI over a checkpoint, or the trainer's periodic
evaluator): it knows the model, the mesh and the input pipeline. This module only asks it for
(features, labels) of a dataset's split and for the dataset's class count, applies the dataset's
class filter, and hands the arrays to `fewshot.evaluate_dataset`.
"""

from typing import Protocol

import numpy as np

from harness.data.fewshot_datasets import (
    FEWSHOT_DATASETS,
    FewShotDataset,
    FewShotSpec,
    filter_classes,
)
from harness.transfer import fewshot


class FeatureSource(Protocol):
    """What `evaluate_spec` needs from the model side."""

    def features(self, dataset: FewShotDataset, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(N, D) pre-logits and (N,) labels of every example of `split`, in a fixed order.

        Deterministic features: eval mode, no dropout, routing without noise.
        """
        ...

    def num_classes(self, dataset: FewShotDataset) -> int:
        """Class count of the dataset's label feature (TFDS info.features[label_key])."""
        ...


def evaluate_spec(spec: FewShotSpec, source: FeatureSource) -> list[fewshot.FewShotResult]:
    """Few-shot results of every dataset in `spec`, for all its seeds, shots and l2 values."""
    results = []
    for name in spec.datasets:
        dataset = FEWSHOT_DATASETS[name]
        train_x, train_y = source.features(dataset, dataset.train_split)
        test_x, test_y = source.features(dataset, dataset.test_split)
        if dataset.classes is None:
            num_classes = source.num_classes(dataset)
        else:
            train_x, train_y = filter_classes(train_x, train_y, dataset.classes)
            test_x, test_y = filter_classes(test_x, test_y, dataset.classes)
            num_classes = len(dataset.classes)
        results += fewshot.evaluate_dataset(
            name,
            train_x,
            train_y,
            test_x,
            test_y,
            num_classes,
            shots=spec.shots,
            seeds=spec.seeds,
            l2_regs=spec.l2_regs,
        )
    return results
