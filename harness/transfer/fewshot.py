"""Few-shot linear evaluation of frozen features, as in the ViT, V-MoE and big_vision papers.

For a dataset, a seed and s shots: take s training examples per class, fit the closed-form ridge
probe of `least_squares` on their pre-logits, and score it on the whole test split. The protocol
follows big_vision's `evaluators/fewshot_lsr.py` and V-MoE's `vmoe/evaluate/fewshot.py`:

* Each class's training indices are shuffled once per seed with `np.random.default_rng(seed)`
  (classes in label order, one generator), and s shots are the first s of each shuffle. Shot
  sets therefore nest: the 5-shot set of a seed contains its 1-shot set. A class with fewer than
  s examples contributes all it has, as in the references.
* big_vision evaluates one l2 = 2^10 for 3 seeds (0, 1, 2); V-MoE sweeps l2 = 2^-10 .. 2^19 and
  reports, per shot count, the l2 with the best mean rank over all datasets (`best_l2_per_shot`),
  one value for every dataset so that l2 is not tuned on each test set separately.

The features must be deterministic: pre-logits of the model in eval mode (no dropout, and for
sparse models routing without noise), extracted once per split and reused for every seed.
"""

import dataclasses
import statistics
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from harness.data.fewshot_datasets import DEFAULT_L2_REG, DEFAULT_SEEDS, DEFAULT_SHOTS
from harness.errors import UsageError
from harness.transfer import least_squares

VMOE_L2_REGS = tuple(2.0**i for i in range(-10, 20))  # V-MoE's configs/common_fewshot.py sweep.
TAG_PREFIX = "fewshot"


@dataclasses.dataclass(frozen=True)
class FewShotResult:
    """Test accuracy of one probe: one dataset, shot count, seed and l2 strength."""

    dataset: str
    shots: int
    seed: int
    l2_reg: float
    accuracy: float


@dataclasses.dataclass(frozen=True)
class FewShotSummary:
    """Mean and sample std of the accuracy over seeds, for one dataset and shot count."""

    mean: float
    std: float  # 0.0 for a single seed
    num_seeds: int
    l2_reg: float


def class_permutations(labels: np.ndarray, num_classes: int, seed: int) -> list[np.ndarray]:
    """Per class, its indices into `labels` in a seeded random order.

    One generator draws the classes' shuffles in label order, so a seed fixes every class's order
    and `fewshot_indices` of growing shot counts take nested sets.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    return [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]


def fewshot_indices(permutations: Sequence[np.ndarray], shots: int) -> np.ndarray:
    """The first `shots` indices of every class's permutation, concatenated in class order."""
    return np.concatenate([order[:shots] for order in permutations]).astype(np.int64)


def accuracy_per_l2(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    num_classes: int,
    l2_regs: Sequence[float] = (DEFAULT_L2_REG,),
) -> dict[float, float]:
    """Test accuracy of the ridge probe fitted on (train_features, train_labels), for each l2.

    The eigendecomposition is shared by all l2 values, so a long sweep costs little more than one.
    """
    probe = least_squares.fit(train_features, train_labels, num_classes)
    test_x = least_squares.preprocess(test_features, probe.mean, probe.std)
    test_labels = np.asarray(test_labels)
    accuracies = {}
    for l2_reg in l2_regs:
        predictions = np.argmax(test_x @ probe.weights(l2_reg), axis=1)
        accuracies[float(l2_reg)] = float(np.mean(predictions == test_labels))
    return accuracies


def check_shots(
    dataset: str, train_labels: np.ndarray, num_classes: int, shots: Sequence[int]
) -> None:
    """Refuses (UsageError, one line) more shots than the train split has examples of some
    class: fewshot_indices would take all there are, and a 100000-shot result would be
    reported for what is a few-thousand-shot one."""
    counts = np.bincount(np.asarray(train_labels, np.int64), minlength=num_classes)
    fewest = int(counts.min()) if counts.size else 0
    too_many = [s for s in shots if s > fewest]
    if too_many:
        raise UsageError(
            f"shots={max(too_many)} is more than the {fewest} train examples of the smallest "
            f"class of {dataset} (class {int(counts.argmin())}); use shots <= {fewest}"
        )


def evaluate_dataset(
    dataset: str,
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    num_classes: int,
    *,
    shots: Sequence[int] = DEFAULT_SHOTS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    l2_regs: Sequence[float] = (DEFAULT_L2_REG,),
) -> list[FewShotResult]:
    """Few-shot accuracy of one dataset for every (seed, shots, l2) combination.

    Args:
      dataset: the name results are tagged with (a key of fewshot_datasets.FEWSHOT_DATASETS).
      train_features, train_labels: (N, D) pre-logits and (N,) labels of the whole train split,
        the pool the shots are drawn from.
      test_features, test_labels: (M, D) pre-logits and (M,) labels of the test split.
      num_classes: number of classes of the dataset (labels lie in [0, num_classes)).
    """
    train_features = np.asarray(train_features)
    train_labels = np.asarray(train_labels)
    check_shots(dataset, train_labels, num_classes, shots)
    results = []
    for seed in seeds:
        permutations = class_permutations(train_labels, num_classes, seed)
        for shot_count in shots:
            chosen = fewshot_indices(permutations, shot_count)
            accuracies = accuracy_per_l2(
                train_features[chosen],
                train_labels[chosen],
                test_features,
                test_labels,
                num_classes,
                l2_regs,
            )
            results.extend(
                FewShotResult(dataset, shot_count, seed, l2_reg, accuracy)
                for l2_reg, accuracy in accuracies.items()
            )
    return results


def best_l2_per_shot(results: Iterable[FewShotResult]) -> dict[int, float]:
    """Per shot count, the l2 with the best mean accuracy rank over all (dataset, seed) pairs.

    V-MoE's `_find_best_l2_reg`: one l2 per shot count for all datasets rather than the best on
    each test set. Ties in rank go to the smaller l2.
    """
    by_shot: dict[int, dict[tuple[str, int], dict[float, float]]] = {}
    for r in results:
        by_shot.setdefault(r.shots, {}).setdefault((r.dataset, r.seed), {})[r.l2_reg] = r.accuracy
    best = {}
    for shot_count, runs in by_shot.items():
        l2_regs = sorted({l2 for accuracies in runs.values() for l2 in accuracies})
        ranks = [
            np.argsort(np.argsort([accuracies[l2] for l2 in l2_regs], kind="stable"), kind="stable")
            for accuracies in runs.values()
            if len(accuracies) == len(l2_regs)
        ]
        best[shot_count] = l2_regs[int(np.argmax(np.mean(ranks, axis=0)))]
    return best


def fewshot_tag(dataset: str, shots: int) -> str:
    """The TensorBoard tag of a dataset's accuracy at a shot count: 'fewshot/cifar10/5shot'."""
    return f"{TAG_PREFIX}/{dataset}/{shots}shot"


def summarize(
    results: Iterable[FewShotResult], l2_per_shot: Mapping[int, float] | None = None
) -> dict[str, FewShotSummary]:
    """Mean and std over seeds, keyed by `fewshot_tag`, in dataset then shot order.

    Args:
      results: from `evaluate_dataset`, for one or more datasets.
      l2_per_shot: the l2 to report at each shot count (shot counts it lacks are left out).
        None: the only l2 evaluated, or, where several were swept, V-MoE's choice
        (`best_l2_per_shot`).
    """
    results = list(results)
    if l2_per_shot is None:
        l2_per_shot = best_l2_per_shot(results)
    accuracies: dict[tuple[str, int], list[float]] = {}
    for r in results:
        if r.l2_reg == l2_per_shot.get(r.shots):
            accuracies.setdefault((r.dataset, r.shots), []).append(r.accuracy)
    return {
        fewshot_tag(dataset, shot_count): FewShotSummary(
            mean=statistics.fmean(values),
            std=statistics.stdev(values) if len(values) > 1 else 0.0,
            num_seeds=len(values),
            l2_reg=l2_per_shot[shot_count],
        )
        for (dataset, shot_count), values in accuracies.items()
    }


def summary_scalars(summary: Mapping[str, FewShotSummary]) -> dict[str, float]:
    """Flat scalars for a metric writer: each tag's mean, and its std under '<tag>_std'."""
    scalars = {}
    for tag, row in summary.items():
        scalars[tag] = row.mean
        scalars[f"{tag}_std"] = row.std
    return scalars


def format_table(summary: Mapping[str, FewShotSummary]) -> str:
    """Plain-text table: a row per shot count, a column per dataset, 'mean ± std' accuracy."""
    cells: dict[tuple[int, str], FewShotSummary] = {}
    for tag, row in summary.items():
        _, dataset, shot_text = tag.split("/")
        cells[(int(shot_text.removesuffix("shot")), dataset)] = row
    datasets = list(dict.fromkeys(dataset for _, dataset in cells))
    shots = sorted({shot_count for shot_count, _ in cells})
    header = ["shots", *datasets]
    rows = [
        [str(s)]
        + [
            f"{cells[(s, d)].mean:.4f} ± {cells[(s, d)].std:.4f}" if (s, d) in cells else "-"
            for d in datasets
        ]
        for s in shots
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    )
