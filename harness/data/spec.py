"""The data section of a gin file (gin/data/*.gin): which TFDS dataset, split and preprocessing."""

import dataclasses

import gin

from harness.data.synthetic_spec import SYNTHETIC, SyntheticSpec
from models.specs import ModelSpec, Spec

AUGMENTATIONS = ("auto", "none", "pad_crop", "pad_crop_flip", "inception_crop_flip")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DataSpec(Spec):
    """What to read and how to preprocess it; bound from gin/data/*.gin.

    The data seed is not here: `train_batches` takes it from the trainer, which owns the run seed.
    """

    # Any TFDS name ('cifar10', 'imagenet2012', 'oxford_iiit_pet:4.*.*', ...), or 'synthetic':
    # random images and labels made on the device (harness/data/synthetic.py), no files.
    dataset: str = "fashion_mnist"
    # TFDS data_dir; None = TFDS's default ($TFDS_DATA_DIR or ~/tensorflow_datasets).
    data_dir: str | None = None
    # Square side images are resized to; None = native size, or 224 for variable-size images.
    image_size: int | None = None
    # Global batch sizes over all processes; eval_batch_size None = batch_size.
    batch_size: int = 128
    eval_batch_size: int | None = None
    # TFDS split specs; eval_split None = 'test', or 'validation' where there is no test split.
    train_split: str = "train"
    eval_split: str | None = None
    # The label feature; None = the dataset's supervised label (e.g. 'original_label' reads
    # imagenet2012_real's single ImageNet label instead of its ReaL label list).
    label_key: str | None = None
    shuffle_buffer: int = 10_000
    # Train augmentation, one of AUGMENTATIONS. 'auto': 'inception_crop_flip' for variable-size
    # images, 'pad_crop_flip' for cifar*, 'none' otherwise (Fashion-MNIST is not flip-invariant:
    # shoes point one way).
    augment: str = "auto"
    crop_padding: int = 4  # Pixels of zero padding before the random crop of the pad_crop modes.
    # Keep decoded train images in memory after the first epoch; right for datasets of a few
    # hundred MB at most (Fashion-MNIST 47 MB, CIFAR 150 MB), wrong for ImageNet.
    cache: bool = False
    # Train and evaluate on these labels only, relabelled 0..k-1 in this order (so VitSpec.
    # num_classes = len(classes)); None = every class. Lists from gin are kept as tuples.
    classes: tuple[int, ...] | list[int] | None = None
    # Shape and nominal size of dataset='synthetic'; ignored for every other dataset.
    synthetic: SyntheticSpec = dataclasses.field(default_factory=SyntheticSpec)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))
            check_classes(self.classes)
        for name in ("batch_size", "shuffle_buffer"):
            if getattr(self, name) < 1:
                raise ValueError(f"DataSpec.{name}={getattr(self, name)} must be >= 1")
        for name in ("eval_batch_size", "image_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"DataSpec.{name}={value} must be >= 1 (or None for the default)")
        if self.crop_padding < 0:
            raise ValueError(f"DataSpec.crop_padding={self.crop_padding} must be >= 0")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(
                f"DataSpec.augment={self.augment!r} is unknown; use one of {AUGMENTATIONS}"
            )
        for name in ("train_split", "eval_split", "dataset", "label_key"):
            if getattr(self, name) == "":
                raise ValueError(
                    f"DataSpec.{name}='' is empty; name a TFDS {name.replace('_', ' ')}"
                )


def check_classes(classes: tuple[int, ...]) -> None:
    """What can be checked without the dataset's metadata (the pipeline checks the upper bound)."""
    if any(not isinstance(c, int) or isinstance(c, bool) for c in classes):
        raise ValueError(f"DataSpec.classes={classes} must be integer labels, e.g. (0, 1, 2, 5, 8)")
    if len(classes) < 2:
        raise ValueError(
            f"DataSpec.classes={classes} keeps fewer than 2 classes; list at least two labels "
            "(or None for all)"
        )
    if min(classes) < 0:
        raise ValueError(f"DataSpec.classes={classes} has a negative label; labels start at 0")
    duplicates = sorted({c for c in classes if classes.count(c) > 1})
    if duplicates:
        raise ValueError(f"DataSpec.classes={classes} repeats {duplicates}; list each label once")


def shaped_like_model(data: DataSpec, model: ModelSpec) -> DataSpec:
    """`data` with every synthetic field left to None taken from the model; other datasets are
    returned as they are. Binding a field explicitly keeps the usual data-vs-model checks."""
    if data.dataset != SYNTHETIC:
        return data
    synthetic = data.synthetic
    return dataclasses.replace(
        data,
        image_size=data.image_size or model.vit.image_size,
        synthetic=dataclasses.replace(
            synthetic,
            num_classes=synthetic.num_classes or model.vit.num_classes,
            num_channels=synthetic.num_channels or model.vit.num_channels,
        ),
    )
