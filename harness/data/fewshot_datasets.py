"""Which datasets the few-shot probe reads, and the gin spec that picks them.

`FEWSHOT_DATASETS` maps each short name (the one in the tag 'fewshot/<name>/<s>shot') to its
TFDS name and the train split the shots are drawn from and the test split it is scored on.
TFDS names and splits are those of V-MoE's `vmoe/configs/common_fewshot.py` and big_vision's
`configs/common_fewshot.py` where they list the dataset. CIFAR-10 and Oxford Flowers-102, among
the V-MoE paper's few-shot datasets (Riquelme et al. 2021) but in neither config, use their
TFDS 'train' and 'test' splits.

`fashion_mnist_heldout` is the CPU-scale stand-in; see FASHION_MNIST_HELDOUT_CLASSES. It is
transfer for a model pretrained without those classes (DataSpec.classes =
FASHION_MNIST_PRETRAIN_CLASSES, gin/data/fashion_mnist_pretrain.gin); `setting` labels a probe of
classes the run trained on in-domain.
"""

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import gin
import numpy as np

from models.specs import Spec

DEFAULT_SHOTS = (1, 5, 10, 25)
DEFAULT_L2_REG = 2.0**10  # big_vision's common_fewshot.py default.
DEFAULT_SEEDS = (0, 1, 2)  # big_vision's num_seeds=3.

# Fashion-MNIST classes (TFDS label order): 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress,
# 4 Coat, 5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot.
#
# Pretrain on five classes and probe on the other five, so the probe measures transfer to
# classes the model never saw rather than re-reading its own classifier. The split gives every
# held-out class a relative it can borrow features from (Dress and Shirt from T-shirt/top, Coat
# from Pullover, Sneaker and Ankle boot from Sandal) while keeping the held-out task hard:
# Shirt/Coat/Dress are among Fashion-MNIST's most confused classes, and Sneaker/Ankle boot must be
# told apart without any boot or closed shoe seen in pretraining.
FASHION_MNIST_PRETRAIN_CLASSES = (0, 1, 2, 5, 8)
FASHION_MNIST_HELDOUT_CLASSES = (3, 4, 6, 7, 9)


class FewShotDataset(NamedTuple):
    """A TFDS dataset, its shot pool and test splits, and optionally the classes to keep."""

    tfds_name: str
    train_split: str
    test_split: str
    label_key: str = "label"
    # Only these labels, renumbered 0..k-1 in this order (`filter_classes`); None = all.
    classes: tuple[int, ...] | None = None


FEWSHOT_DATASETS: dict[str, FewShotDataset] = {
    # V-MoE config: the 10% ImageNet subset (~128 images a class) is the shot pool.
    "imagenet": FewShotDataset("imagenet2012_subset/10pct", "train", "validation"),
    "cifar10": FewShotDataset("cifar10", "train", "test"),
    "cifar100": FewShotDataset("cifar100", "train", "test"),
    "pets": FewShotDataset("oxford_iiit_pet", "train", "test"),
    "flowers": FewShotDataset("oxford_flowers102", "train", "test"),
    "birds": FewShotDataset("caltech_birds2011", "train", "test"),
    "caltech": FewShotDataset("caltech101", "train", "test"),
    "dtd": FewShotDataset("dtd", "train", "test"),
    # Both have a single 'train' split in TFDS; the configs cut it at a fixed example.
    "uc_merced": FewShotDataset("uc_merced", "train[:1000]", "train[1000:]"),
    "col_hist": FewShotDataset("colorectal_histology", "train[:2000]", "train[2000:]"),
    # In both configs, though not in the V-MoE paper's list.
    "cars": FewShotDataset("cars196:2.1.0", "train", "test"),
    # CPU scale, all ten classes: in-domain for a model trained on Fashion-MNIST (the probe then
    # re-reads classes it was trained on), the cheapest sanity check of the features.
    "fashion_mnist": FewShotDataset("fashion_mnist", "train", "test"),
    # CPU scale: probe the classes held out of pretraining (FASHION_MNIST_PRETRAIN_CLASSES).
    "fashion_mnist_heldout": FewShotDataset(
        "fashion_mnist", "train", "test", classes=FASHION_MNIST_HELDOUT_CLASSES
    ),
}
VMOE_PAPER_DATASETS = (
    "imagenet",
    "cifar10",
    "cifar100",
    "pets",
    "flowers",
    "birds",
    "caltech",
    "dtd",
    "uc_merced",
    "col_hist",
)


def filter_classes(
    examples: np.ndarray, labels: np.ndarray, classes: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """The examples whose label is in `classes`, in their original order, relabelled 0..k-1.

    Label `classes[i]` becomes i, so a model or probe sees a dense k-way problem. `examples` is
    anything indexable by a boolean mask along its first axis (images, features).
    """
    labels = np.asarray(labels)
    new_label = np.full(max(int(labels.max(initial=0)), *classes) + 1, -1, np.int64)
    new_label[list(classes)] = np.arange(len(classes))
    keep = new_label[labels] >= 0
    return np.asarray(examples)[keep], new_label[labels[keep]]


@gin.configurable
@dataclasses.dataclass(frozen=True)
class FewShotSpec(Spec):
    """What the few-shot evaluation runs; bound from gin, e.g.

        FewShotSpec.datasets = ('cifar10', 'pets')
        FewShotSpec.l2_regs = (1024.0,)

    Lists work as well as tuples. Defaults are big_vision's: shots 1/5/10/25, l2 = 2^10, 3 seeds.
    """

    datasets: tuple[str, ...] | list[str] = VMOE_PAPER_DATASETS
    shots: tuple[int, ...] | list[int] = DEFAULT_SHOTS
    l2_regs: tuple[float, ...] | list[float] = (DEFAULT_L2_REG,)
    seeds: tuple[int, ...] | list[int] = DEFAULT_SEEDS
    # TFDS data_dir; None = TFDS's default ($TFDS_DATA_DIR or ~/tensorflow_datasets).
    data_dir: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("datasets", "shots", "l2_regs", "seeds"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        unknown = [d for d in self.datasets if d not in FEWSHOT_DATASETS]
        if unknown:
            known = sorted(FEWSHOT_DATASETS)
            raise ValueError(f"FewShotSpec.datasets has unknown {unknown}; choose from {known}")
        if not self.shots or any(not isinstance(s, int) or s < 1 for s in self.shots):
            raise ValueError(f"FewShotSpec.shots={self.shots} must be positive integers")
        if not self.l2_regs or any(not l2 > 0 for l2 in self.l2_regs):
            raise ValueError(f"FewShotSpec.l2_regs={self.l2_regs} must be positive")
        if not self.seeds:
            raise ValueError("FewShotSpec.seeds is empty; give at least one seed, e.g. (0,)")


def _family(tfds_name: str) -> str:
    """'imagenet2012_subset/10pct' and 'imagenet2012:5.*.*' -> 'imagenet2012'."""
    return tfds_name.split(":")[0].split("/")[0].removesuffix("_subset")


def setting(
    name: str, trained_on: str, trained_classes: Sequence[int] | None = None
) -> tuple[str, str]:
    """('in-domain' or 'transfer', a one-line explanation) of probing FEWSHOT_DATASETS[name]
    with a model trained on the TFDS dataset `trained_on`, on its labels `trained_classes`
    (the run's DataSpec.classes; None = all of them).

    A probe of the same dataset is transfer only when its classes and the trained ones are
    disjoint: then the model never saw an image of a probed class.
    """
    dataset = FEWSHOT_DATASETS[name]
    if _family(dataset.tfds_name) != _family(trained_on):
        return (
            "transfer",
            f"{name}: transfer ({dataset.tfds_name}; the run trained on {trained_on})",
        )
    trained = (
        "all of its classes" if trained_classes is None else f"classes {list(trained_classes)}"
    )
    if dataset.classes is None:
        return "in-domain", (
            f"{name}: in-domain, the run trained on {trained_on} ({trained}) and the probe "
            "reads all its classes; this measures how linearly separable the training classes "
            "are, not transfer"
        )
    probed = list(dataset.classes)
    if trained_classes is not None and not set(probed) & set(trained_classes):
        return "transfer", (
            f"{name}: transfer, classes {probed} were held out of this run's training (it "
            f"trained on {trained_on} {trained})"
        )
    return "in-domain", (
        f"{name}: in-domain, classes {probed} are held out of the protocol's pretraining but "
        f"this run trained on {trained_on} {trained}, so it has seen some of them; not transfer"
    )
