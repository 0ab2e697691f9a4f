"""The synthetic dataset's spec (gin/data/synthetic.gin): random images and labels, no files.

`DataSpec.dataset = 'synthetic'` selects it. Its shape and class count default to the model's,
so `--gin_file=gin/vmoe_h14.gin --gin_file=gin/data/synthetic.gin` needs no other binding, and a
reduced model (`--gin_param=VitSpec.image_size=32`) gets matching data. Like every spec module,
this imports no JAX or TensorFlow.
"""

import dataclasses

import gin

from models.specs import Spec

SYNTHETIC = "synthetic"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SyntheticSpec(Spec):
    """Shape and nominal size of the synthetic dataset (read only when it is selected).

    The example counts are nominal: nothing is stored, but they set how many steps an epoch is
    (TrainSpec.num_epochs) and how many images one evaluation sees. The defaults are
    ImageNet-1k's, so a paper config's schedule is the one it would have on ImageNet.
    """

    # None: the model's VitSpec.num_classes / VitSpec.num_channels.
    num_classes: int | None = None
    num_channels: int | None = None
    num_train_examples: int = 1_281_167
    num_eval_examples: int = 50_000

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("num_classes", "num_channels"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(
                    f"SyntheticSpec.{name}={value} must be >= 1 (or None: the model's)"
                )
        for name in ("num_train_examples", "num_eval_examples"):
            if getattr(self, name) < 1:
                raise ValueError(f"SyntheticSpec.{name}={getattr(self, name)} must be >= 1")
