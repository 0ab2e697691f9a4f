"""Few-shot linear evaluation: the ridge solver, shot sampling and the summary, on small arrays."""

import gin
import numpy as np
import pytest

from harness.data import fewshot_datasets
from harness.transfer import fewshot, fewshot_suite, least_squares


def _ridge_by_lstsq(x: np.ndarray, y: np.ndarray, l2_reg: float) -> np.ndarray:
    """min |xw - y|^2 + l2 |w|^2 as ordinary least squares on [x; sqrt(l2) I] w = [y; 0]."""
    dim = x.shape[1]
    augmented_x = np.concatenate([x, np.sqrt(l2_reg) * np.eye(dim)])
    augmented_y = np.concatenate([y, np.zeros((dim, y.shape[1]))])
    return np.linalg.lstsq(augmented_x, augmented_y, rcond=None)[0]


@pytest.mark.parametrize(("num_points", "dim", "form"), [(40, 6, "primal"), (6, 40, "dual")])
@pytest.mark.parametrize("l2_reg", [0.5, 2.0**10])
def test_ridge_weights_match_lstsq_on_the_augmented_system(num_points, dim, form, l2_reg):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(num_points, dim)) * rng.uniform(0.5, 3, size=dim) + 2.0
    labels = rng.integers(0, 3, size=num_points)
    probe = least_squares.fit(features, labels, num_classes=3)
    assert probe.form == form
    # The preprocessing, written out: whiten with the few-shot statistics, append 100.
    whitened = (features - features.mean(0)) / (features.std(0) + 1e-5)
    x = np.concatenate([whitened, np.full((num_points, 1), 100.0)], axis=1)
    y = np.where(np.arange(3) == labels[:, None], 1.0, -1.0)
    np.testing.assert_allclose(
        probe.weights(l2_reg), _ridge_by_lstsq(x, y, l2_reg), rtol=1e-6, atol=1e-9
    )


def test_test_features_are_whitened_with_the_fewshot_statistics():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(30, 4)) * 5 + 3
    probe = least_squares.fit(train, rng.integers(0, 2, size=30), num_classes=2)
    test = rng.normal(size=(7, 4))
    expected = np.concatenate(
        [(test - train.mean(0)) / (train.std(0) + 1e-5), np.full((7, 1), 100.0)], axis=1
    )
    np.testing.assert_allclose(
        probe.scores(test, 1.0), expected @ probe.weights(1.0), rtol=1e-12, atol=1e-12
    )


def test_separable_classes_are_learned_from_one_shot():
    centers = np.eye(4) * 10
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(4), 20)
    features = centers[labels] + rng.normal(scale=0.1, size=(80, 4))
    accuracy = fewshot.accuracy_per_l2(features[::20], labels[::20], features, labels, 4, [1.0])
    assert accuracy == {1.0: 1.0}


def test_shot_sets_are_seeded_per_class_and_nest_across_shot_counts():
    labels = np.array([0, 1, 2] * 30)
    orders = fewshot.class_permutations(labels, num_classes=3, seed=7)
    assert [sorted(o.tolist()) for o in orders] == [
        np.flatnonzero(labels == c).tolist() for c in range(3)
    ]
    one, five, ten = (fewshot.fewshot_indices(orders, s) for s in (1, 5, 10))
    assert np.bincount(labels[five]).tolist() == [5, 5, 5]
    assert set(one) < set(five) < set(ten)
    again = fewshot.fewshot_indices(fewshot.class_permutations(labels, 3, seed=7), 5)
    other = fewshot.fewshot_indices(fewshot.class_permutations(labels, 3, seed=8), 5)
    assert again.tolist() == five.tolist()
    assert other.tolist() != five.tolist()


def test_a_class_short_of_shots_gives_what_it_has():
    labels = np.array([0, 0, 0, 1])
    chosen = fewshot.fewshot_indices(fewshot.class_permutations(labels, 2, seed=0), 2)
    assert np.bincount(labels[chosen]).tolist() == [2, 1]


def _blobs(seed: int, per_class: int, num_classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs around scaled one-hot centres: (features, labels)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), per_class)
    noise = rng.normal(size=(num_classes * per_class, num_classes))
    return np.eye(num_classes)[labels] * 3 + noise, labels


def test_evaluate_and_summarize_name_tags_and_average_over_seeds():
    train_x, train_y = _blobs(0, 30)
    test_x, test_y = _blobs(1, 10)
    results = fewshot.evaluate_dataset(
        "blobs", train_x, train_y, test_x, test_y, 3, shots=(1, 5), seeds=(0, 1, 2)
    )
    assert len(results) == 6
    assert {r.l2_reg for r in results} == {fewshot.DEFAULT_L2_REG}
    summary = fewshot.summarize(results)
    assert list(summary) == ["fewshot/blobs/1shot", "fewshot/blobs/5shot"]
    five = [r.accuracy for r in results if r.shots == 5]
    row = summary["fewshot/blobs/5shot"]
    assert row.num_seeds == 3
    assert row.mean == pytest.approx(np.mean(five))
    assert row.std == pytest.approx(np.std(five, ddof=1))
    scalars = fewshot.summary_scalars(summary)
    assert scalars["fewshot/blobs/5shot"] == row.mean
    assert scalars["fewshot/blobs/5shot_std"] == row.std


def test_best_l2_is_the_best_mean_rank_over_datasets_and_seeds():
    def result(dataset, seed, l2, accuracy):
        return fewshot.FewShotResult(dataset, 5, seed, l2, accuracy)

    # Ranks of l2 = (1, 2, 4): a -> (0, 2, 1), b -> (0, 1, 2), c -> (1, 2, 0): means (1/3, 5/3, 1).
    results = [
        *(result("a", 0, l2, acc) for l2, acc in [(1.0, 0.1), (2.0, 0.9), (4.0, 0.5)]),
        *(result("b", 0, l2, acc) for l2, acc in [(1.0, 0.1), (2.0, 0.2), (4.0, 0.3)]),
        *(result("c", 0, l2, acc) for l2, acc in [(1.0, 0.5), (2.0, 0.6), (4.0, 0.4)]),
    ]
    assert fewshot.best_l2_per_shot(results) == {5: 2.0}
    assert fewshot.summarize(results)["fewshot/a/5shot"].mean == 0.9
    assert fewshot.summarize(results, {5: 4.0})["fewshot/b/5shot"].mean == 0.3


def test_fashion_mnist_split_is_disjoint_and_relabels_in_order():
    pretrain = fewshot_datasets.FASHION_MNIST_PRETRAIN_CLASSES
    heldout = fewshot_datasets.FASHION_MNIST_HELDOUT_CLASSES
    assert set(pretrain).isdisjoint(heldout)
    assert sorted(pretrain + heldout) == list(range(10))
    labels = np.arange(10).repeat(2)
    images = labels[:, None] * 10.0
    kept_images, kept_labels = fewshot_datasets.filter_classes(images, labels, (9, 3))
    assert kept_labels.tolist() == [1, 1, 0, 0]  # original order kept; 9 -> 0, 3 -> 1
    assert kept_images[:, 0].tolist() == [30.0, 30.0, 90.0, 90.0]


def test_every_fewshot_dataset_has_a_tfds_name_and_two_splits():
    for name, dataset in fewshot_datasets.FEWSHOT_DATASETS.items():
        assert dataset.tfds_name and dataset.train_split and dataset.test_split, name
    spec = fewshot_datasets.FewShotSpec(datasets=["cifar10", "pets"], shots=[1, 5])
    assert spec.datasets == ("cifar10", "pets")
    assert spec.shots == (1, 5)
    with pytest.raises(ValueError, match="unknown"):
        fewshot_datasets.FewShotSpec(datasets=("no_such_set",))


def test_fewshot_spec_binds_from_gin():
    gin.clear_config()
    try:
        gin.parse_config(
            ["FewShotSpec.datasets = ['fashion_mnist_heldout']", "FewShotSpec.seeds = (0,)"]
        )
        spec = fewshot_datasets.FewShotSpec()
    finally:
        gin.clear_config()
    assert spec.datasets == ("fashion_mnist_heldout",)
    assert spec.seeds == (0,)
    assert spec.shots == fewshot.DEFAULT_SHOTS


class _BlobSource:
    """Ten well-separated classes; records which splits were asked for."""

    def __init__(self):
        self.requests = []

    def features(self, dataset, split):
        self.requests.append((dataset.tfds_name, split))
        return _blobs(0 if split == "train" else 1, per_class=30, num_classes=10)

    def num_classes(self, dataset):
        assert dataset.classes is None, "a filtered dataset's class count is len(classes)"
        return 10


def test_evaluate_spec_filters_the_heldout_classes_and_tags_results():
    spec = fewshot_datasets.FewShotSpec(
        datasets=("fashion_mnist_heldout", "cifar10"), shots=(1, 5), seeds=(0,)
    )
    source = _BlobSource()
    results = fewshot_suite.evaluate_spec(spec, source)
    assert source.requests == [
        ("fashion_mnist", "train"),
        ("fashion_mnist", "test"),
        ("cifar10", "train"),
        ("cifar10", "test"),
    ]
    summary = fewshot.summarize(results)
    assert set(summary) == {
        "fewshot/fashion_mnist_heldout/1shot",
        "fewshot/fashion_mnist_heldout/5shot",
        "fewshot/cifar10/1shot",
        "fewshot/cifar10/5shot",
    }
    assert summary["fewshot/cifar10/5shot"].mean > 0.5  # chance: 0.1
