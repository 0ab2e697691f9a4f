"""The training section of a gin file: how long, how to optimise, on which mesh.

Like every spec, these import no JAX, so a gin file parses (and a bad binding is reported)
before anything heavy is imported.
"""

import dataclasses
import math

import gin

from models.specs import MESH_AXES, Spec

LOSSES = ("softmax", "sigmoid")
COMPUTE_DTYPES = ("float32", "bfloat16")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TrainSpec(Spec):
    """How long and how to train. num_epochs, when set, overrides num_steps."""

    num_steps: int = 1000
    num_epochs: float | None = None
    log_every_steps: int = 50
    eval_every_steps: int = 0  # 0: evaluate once, at the end
    checkpoint_every_steps: int = 500
    keep_checkpoints: int = 3
    seed: int = 0
    loss: str = "softmax"
    label_smoothing: float = 0.0
    compute_dtype: str = "float32"
    # Gradient accumulation: each step runs the global batch as this many equal micro-batches
    # in sequence (harness/train/grad_accumulation.py), then makes one optimizer update.
    microbatches: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in (
            "num_steps",
            "log_every_steps",
            "checkpoint_every_steps",
            "keep_checkpoints",
            "microbatches",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainSpec.{name}={getattr(self, name)} must be >= 1")
        epochs = self.num_epochs
        if epochs is not None and not (math.isfinite(epochs) and epochs > 0):
            raise ValueError(f"TrainSpec.num_epochs={epochs} must be finite and > 0 (or None)")
        if self.eval_every_steps < 0:
            raise ValueError(
                f"TrainSpec.eval_every_steps={self.eval_every_steps} must be >= 0 "
                "(0 evaluates at the end only)"
            )
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(
                f"TrainSpec.label_smoothing={self.label_smoothing} must be in [0, 1); e.g. 0.1"
            )
        if self.loss not in LOSSES:
            raise ValueError(f"TrainSpec.loss={self.loss!r} is unknown; use one of {LOSSES}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(
                f"TrainSpec.compute_dtype={self.compute_dtype!r} is unknown; "
                "use 'float32' or 'bfloat16'"
            )

    def total_steps(self, batch_size: int, num_train_examples: int) -> int:
        if self.num_epochs is None:
            return self.num_steps
        return max(1, int(self.num_epochs * num_train_examples / batch_size))


DECAYS = ("linear", "cosine")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class OptimizerSpec(Spec):
    """Adam with decoupled weight decay, linear warm-up, then linear or cosine decay."""

    learning_rate: float = 1e-3
    warmup_steps: int = 10_000
    decay: str = "linear"
    end_learning_rate: float = 1e-5
    weight_decay: float = 0.1
    b1: float = 0.9
    b2: float = 0.999
    grad_clip_norm: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.decay not in DECAYS:
            raise ValueError(f"OptimizerSpec.decay={self.decay!r} is unknown; use one of {DECAYS}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(
                f"OptimizerSpec.learning_rate={self.learning_rate} must be finite and > 0; "
                "e.g. 1e-3"
            )
        if self.warmup_steps < 0:
            raise ValueError(
                f"OptimizerSpec.warmup_steps={self.warmup_steps} must be >= 0 (0: no warm-up)"
            )
        for name in ("end_learning_rate", "weight_decay"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"OptimizerSpec.{name}={value} must be finite and >= 0")
        for name in ("b1", "b2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"OptimizerSpec.{name}={getattr(self, name)} must be in [0, 1)")
        clip = self.grad_clip_norm
        if clip is not None and not (math.isfinite(clip) and clip > 0):
            raise ValueError(
                f"OptimizerSpec.grad_clip_norm={clip} must be finite and > 0 (or None: no clipping)"
            )


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MeshSpec(Spec):
    """Mesh axis sizes; -1 (on at most one axis) takes the devices the others leave."""

    data: int = -1
    expert: int = 1
    model: int = 1

    def resolve(self, device_count: int) -> tuple[int, int, int]:
        sizes = (self.data, self.expert, self.model)
        named = ", ".join(f"{a}={s}" for a, s in zip(MESH_AXES, sizes, strict=True))
        if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
            raise ValueError(
                f"MeshSpec ({named}) is invalid; give positive sizes with at most one -1"
            )
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if device_count % known:
                raise ValueError(
                    f"MeshSpec ({named}) cannot fill {device_count} devices: {known} does not "
                    f"divide {device_count}; pick sizes whose product divides the device count"
                )
            sizes = tuple(device_count // known if s == -1 else s for s in sizes)
        if math.prod(sizes) != device_count:
            raise ValueError(
                f"MeshSpec ({named}) multiplies to {math.prod(sizes)} but there are "
                f"{device_count} devices; make the sizes multiply to {device_count} or use -1"
            )
        return sizes  # type: ignore[return-value]
