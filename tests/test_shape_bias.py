"""Shape bias: the 16-category decision from 1000 logits, and the counting, on hand-made data."""

import math

import numpy as np

from harness.transfer import shape_bias

CATEGORY = {name: i for i, name in enumerate(shape_bias.GEIRHOS_CATEGORIES)}


def test_categories_are_tfds_label_order_and_map_to_disjoint_imagenet_classes():
    # TFDS geirhos_conflict_stimuli's ClassLabel names are these 16, sorted.
    assert list(shape_bias.GEIRHOS_CATEGORIES) == sorted(shape_bias.GEIRHOS_CATEGORIES)
    assert len(shape_bias.GEIRHOS_CATEGORIES) == 16
    all_indices = [i for c in shape_bias.CATEGORY_IMAGENET_INDICES.values() for i in c]
    assert len(all_indices) == len(set(all_indices)) == 207
    assert shape_bias.CATEGORY_IMAGENET_INDICES["knife"] == (499,)


def test_category_probability_is_the_mean_not_the_max():
    logits = np.full((1, 1000), -30.0)
    # One dog class is likelier than knife (a one-class category): under max, dog would win;
    # under mean, that dog probability is shared out over 109 dog classes and knife wins.
    dog = shape_bias.CATEGORY_IMAGENET_INDICES["dog"]
    logits[0, dog[0]] = 5.0
    logits[0, 499] = 4.0  # knife
    probabilities = shape_bias.category_probabilities(logits)
    assert probabilities.shape == (1, 16)
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert math.isclose(probabilities[0, CATEGORY["dog"]], softmax[0, list(dog)].mean())
    assert shape_bias.category_predictions(logits).tolist() == [CATEGORY["knife"]]


def test_shape_bias_counts_only_conflict_images_with_shape_or_texture_decisions():
    cat, dog, car, bird = CATEGORY["cat"], CATEGORY["dog"], CATEGORY["car"], CATEGORY["bird"]
    shape = np.array([cat, cat, dog, car, car, bird])
    texture = np.array([dog, dog, car, bird, car, cat])
    # shape hit, texture hit, shape hit, neither (not counted), no conflict (dropped), texture hit
    predictions = np.array([cat, dog, dog, cat, car, cat])
    counts = shape_bias.shape_bias_counts(predictions, shape, texture)
    assert counts == shape_bias.ShapeBiasCounts(shape_hits=2, texture_hits=2, conflict_images=5)
    assert counts.shape_bias == 0.5
    more = shape_bias.shape_bias_counts(np.array([cat]), np.array([cat]), np.array([dog]))
    assert (counts + more).shape_bias == 3 / 5


def test_shape_bias_from_logits_and_no_decision_is_nan():
    logits = np.zeros((2, 1000))
    logits[0, 499] = 10.0  # knife
    logits[1, 766] = 10.0  # oven
    knife, oven, clock = CATEGORY["knife"], CATEGORY["oven"], CATEGORY["clock"]
    counts = shape_bias.shape_bias_from_logits(logits, [knife, clock], [clock, oven])
    assert counts.shape_bias == 0.5
    none = shape_bias.shape_bias_counts(np.array([clock]), np.array([knife]), np.array([oven]))
    assert math.isnan(none.shape_bias)
