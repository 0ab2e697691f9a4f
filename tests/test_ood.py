"""OOD scoring: the 200-class subsets, logit masking and ImageNet ReaL, on hand-made arrays."""

import numpy as np
import pytest

from harness.data import imagenet_subsets
from harness.transfer import ood


@pytest.mark.parametrize(
    "classes", [imagenet_subsets.IMAGENET_R_CLASSES, imagenet_subsets.IMAGENET_A_CLASSES]
)
def test_subsets_are_200_distinct_sorted_imagenet_indices(classes):
    assert len(classes) == 200
    assert list(classes) == sorted(set(classes))
    assert classes[0] >= 0 and classes[-1] < ood.NUM_IMAGENET_CLASSES


def test_subset_lists_match_their_sources_at_a_few_known_points():
    # ImageNet-R: goldfish (1) and great white shark (2) are in, tench (0) is not.
    assert imagenet_subsets.IMAGENET_R_CLASSES[:3] == (1, 2, 4)
    # ImageNet-A: its first class is 6 (stingray) and its last is 988 (acorn).
    assert imagenet_subsets.IMAGENET_A_CLASSES[0] == 6
    assert imagenet_subsets.IMAGENET_A_CLASSES[-1] == 988


def test_masking_picks_the_best_class_inside_the_subset():
    logits = np.zeros((2, 1000), np.float32)
    logits[0, 0] = 9.0  # tench: outside ImageNet-R, ignored
    logits[0, 2] = 5.0  # great white shark: inside
    logits[1, 999] = 9.0  # outside
    logits[1, 988] = 1.0  # inside
    masked = ood.mask_to_classes(logits, imagenet_subsets.IMAGENET_R_CLASSES)
    assert np.isneginf(masked[0, 0])
    assert masked[0, 2] == 5.0
    assert ood.predict(logits).tolist() == [0, 999]
    assert ood.predict(logits, imagenet_subsets.IMAGENET_R_CLASSES).tolist() == [2, 988]
    assert ood.score("imagenet_r", logits, np.array([2, 1])) == (1, 2)
    assert ood.score("imagenet_v2", logits, np.array([0, 1])) == (1, 2)


def test_real_counts_any_label_and_skips_unlabelled_images():
    predictions = np.array([3, 7, 5, 1])
    real_labels = [[3], [2, 7, 9], [], [4, 8]]  # hit, hit (second label), skipped, miss
    assert ood.real_correct(predictions, real_labels) == (2, 3)
    padded = ood.pad_label_lists(real_labels)
    assert padded.shape == (4, 3)
    assert ood.real_correct(predictions, padded) == (2, 3)


def test_real_padding_never_matches_a_prediction():
    # A padded slot holds -1; no argmax is -1, but the slot must also not make a row "labelled".
    assert ood.real_correct(np.array([0, 0]), np.array([[-1, -1], [0, -1]])) == (1, 1)


def test_real_scoring_goes_through_score_with_logits():
    logits = np.eye(1000, dtype=np.float32)[[10, 20]]
    assert ood.score("imagenet2012_real", logits, [[10, 11], [21]]) == (1, 2)


def test_every_ood_set_names_its_split_and_label_key():
    assert set(ood.OOD_DATASETS) == {
        "imagenet_v2",
        "imagenet_r",
        "imagenet_a",
        "imagenet_sketch",
        "imagenet2012_real",
    }
    assert ood.OOD_DATASETS["imagenet2012_real"].label_key == "real_label"
    assert ood.OOD_DATASETS["imagenet2012_real"].split == "validation"
    assert all(d.split == "test" for n, d in ood.OOD_DATASETS.items() if n != "imagenet2012_real")
