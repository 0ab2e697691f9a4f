"""Shape bias on the cue-conflict stimuli of Geirhos et al. (ICLR 2019), "ImageNet-trained CNNs
are biased towards texture; increasing shape bias improves accuracy and robustness".

Each stimulus (TFDS `geirhos_conflict_stimuli`, its only split 'test') shows the shape of one
of 16 categories with the texture of another; TFDS gives both as 'shape_label' and
'texture_label', indices into the same 16 alphabetically sorted category names as
GEIRHOS_CATEGORIES. A 1000-way ImageNet classifier is scored the way model-vs-human does it
(Geirhos et al. 2021; github.com/bethgelab/model-vs-human):
* `ImageNetProbabilitiesTo16ClassesMapping` (datasets/decision_mappings.py): softmax over the
  1000 classes, then each category's probability is the MEAN (its default aggregation, not the
  max) of the probabilities of the ImageNet classes belonging to it; the decision is the top one.
* `ShapeBias` (plotting/analyses.py): images whose shape and texture categories coincide carry
  no conflict and are dropped; of the rest, shape bias = shape hits / (shape hits + texture hits),
  so decisions that are neither category do not count.
"""

import dataclasses

import numpy as np

TFDS_NAME = "geirhos_conflict_stimuli"
TFDS_SPLIT = "test"
SHAPE_LABEL_KEY = "shape_label"
TEXTURE_LABEL_KEY = "texture_label"

# The ImageNet-1k indices of each category: the `<category>_indices` lists of model-vs-human's
# helper/human_categories.py (the ones its decision mapping uses). They equal that file's WNID
# sets located in TFDS's sorted ImageNet label list. Keys are in sorted order, which is TFDS's
# ClassLabel order for shape_label and texture_label.
# fmt: off
CATEGORY_IMAGENET_INDICES: dict[str, tuple[int, ...]] = {
    "airplane": (404,),
    "bear": (294, 295, 296, 297),
    "bicycle": (444, 671),
    "bird": (
        8, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 22, 23, 24, 80, 81, 82, 83, 87, 88, 89, 90,
        91, 92, 93, 94, 95, 96, 98, 99, 100, 127, 128, 129, 130, 131, 132, 133, 135, 136, 137,
        138, 139, 140, 141, 142, 143, 144, 145
    ),
    "boat": (472, 554, 625, 814, 914),
    "bottle": (440, 720, 737, 898, 899, 901, 907),
    "car": (436, 511, 817),
    "cat": (281, 282, 283, 284, 285, 286),
    "chair": (423, 559, 765, 857),
    "clock": (409, 530, 892),
    "dog": (
        152, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 163, 164, 165, 166, 167, 168,
        169, 170, 171, 172, 173, 174, 175, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185,
        186, 187, 188, 189, 190, 191, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203,
        205, 206, 207, 208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 220, 221,
        222, 223, 224, 225, 226, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239,
        240, 241, 243, 244, 245, 246, 247, 248, 249, 250, 252, 253, 254, 255, 256, 257, 259,
        261, 262, 263, 265, 266, 267, 268
    ),
    "elephant": (385, 386),
    "keyboard": (508, 878),
    "knife": (499,),
    "oven": (766,),
    "truck": (555, 569, 656, 675, 717, 734, 864, 867),
}
# fmt: on
GEIRHOS_CATEGORIES = tuple(CATEGORY_IMAGENET_INDICES)


def category_probabilities(logits: np.ndarray) -> np.ndarray:
    """(N, 16) mean softmax probability of each category's ImageNet classes."""
    logits = np.asarray(logits, np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=-1, keepdims=True)
    return np.stack(
        [
            probabilities[:, list(classes)].mean(axis=-1)
            for classes in CATEGORY_IMAGENET_INDICES.values()
        ],
        axis=-1,
    )


def category_predictions(logits: np.ndarray) -> np.ndarray:
    """(N,) index into GEIRHOS_CATEGORIES of each image's decision."""
    return np.argmax(category_probabilities(logits), axis=-1)


@dataclasses.dataclass(frozen=True)
class ShapeBiasCounts:
    """Decisions on cue-conflict images (shape != texture); add the counts of several batches."""

    shape_hits: int
    texture_hits: int
    conflict_images: int

    def __add__(self, other: "ShapeBiasCounts") -> "ShapeBiasCounts":
        return ShapeBiasCounts(
            self.shape_hits + other.shape_hits,
            self.texture_hits + other.texture_hits,
            self.conflict_images + other.conflict_images,
        )

    @property
    def shape_bias(self) -> float:
        """Shape hits / (shape hits + texture hits); NaN when no decision was either."""
        decided = self.shape_hits + self.texture_hits
        return self.shape_hits / decided if decided else float("nan")


def shape_bias_counts(
    predictions: np.ndarray, shape_labels: np.ndarray, texture_labels: np.ndarray
) -> ShapeBiasCounts:
    """Counts shape and texture decisions among the images whose two labels differ.

    All three arrays hold indices into GEIRHOS_CATEGORIES.
    """
    predictions, shape_labels, texture_labels = (
        np.asarray(a).reshape(-1) for a in (predictions, shape_labels, texture_labels)
    )
    conflict = shape_labels != texture_labels
    return ShapeBiasCounts(
        shape_hits=int(np.sum(conflict & (predictions == shape_labels))),
        texture_hits=int(np.sum(conflict & (predictions == texture_labels))),
        conflict_images=int(np.sum(conflict)),
    )


def shape_bias_from_logits(
    logits: np.ndarray, shape_labels: np.ndarray, texture_labels: np.ndarray
) -> ShapeBiasCounts:
    """`shape_bias_counts` of the 16-category decisions of (N, 1000) ImageNet logits."""
    return shape_bias_counts(category_predictions(logits), shape_labels, texture_labels)
