"""The training section of a gin file: how long, how to optimise, on which mesh.

Like every spec, these import no JAX, so a gin file parses (and a bad binding is reported)
before anything heavy is imported.
"""

import dataclasses
import math

import gin

from harness.checkpoint_formats.registry import FORMATS as CHECKPOINT_FORMATS
from harness.data.eval_datasets import check_eval_datasets
from models.specs import MESH_AXES, Spec

LOSSES = ("softmax", "sigmoid")
COMPUTE_DTYPES = ("float32", "bfloat16")


INIT_FROM_HEADS = (None, "keep", "new")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TrainSpec(Spec):
    """How long and how to train. num_epochs, when set, overrides num_steps.

    init_from: fine-tune from a run directory or a released checkpoint (harness/train/
    init_from.py); init_from_format skips detecting its format, as harness.evaluate's --format.
    init_from_head: what becomes of the checkpoint's classification head. None: fine-tuning
    replaces it with a zero one, upcycling (a dense checkpoint for a sparse model) keeps it
    when the class counts match; 'keep': keep it (continued pretraining on the same labels;
    it must fit); 'new': always a new zero head.
    """

    num_steps: int = 1000
    num_epochs: float | None = None
    log_every_steps: int = 50
    eval_every_steps: int = 0  # 0: evaluate once, at the end
    # Few-shot linear probes of the gin-bound FewShotSpec every that many steps and at the
    # last step (harness/transfer/fewshot_eval.py); 0: none.
    fewshot_every_steps: int = 0
    checkpoint_every_steps: int = 500
    keep_checkpoints: int = 3
    seed: int = 0
    loss: str = "softmax"
    label_smoothing: float = 0.0
    compute_dtype: str = "float32"
    # (first step, number of steps) to trace with jax.profiler into WORKDIR/plugins/profile
    # (TensorBoard's profile tab); None: no trace. Step 1 compiles, so start at 2 or later.
    profile_steps: tuple[int, int] | None = None
    # OOD test sets and 'shape_bias' evaluated after the final evaluation, e.g.
    # ('imagenet_v2', 'imagenet_r', 'shape_bias'); harness/transfer/ood_eval.py. A list from
    # JSON or gin is kept as a tuple.
    eval_datasets: tuple[str, ...] | list[str] = ()
    init_from: str | None = None
    init_from_format: str | None = None
    init_from_head: str | None = None
    # Gradient accumulation: each step runs the global batch as this many equal micro-batches
    # in sequence (harness/runtime/grad_accumulation.py), then makes one optimizer update.
    microbatches: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.profile_steps, list):  # experiment.json stores tuples as lists
            object.__setattr__(self, "profile_steps", tuple(self.profile_steps))
        super().__post_init__()
        window = self.profile_steps
        if window is not None and (
            len(window) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in window)
            or window[0] < 1
            or window[1] < 1
        ):
            raise ValueError(
                f"TrainSpec.profile_steps={window!r} must be (first step >= 1, number of "
                "steps >= 1), e.g. (10, 5), or None"
            )
        object.__setattr__(self, "eval_datasets", tuple(self.eval_datasets))
        check_eval_datasets(self.eval_datasets, "TrainSpec.eval_datasets")
        self._check_init_from()
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
        if self.fewshot_every_steps < 0:
            raise ValueError(
                f"TrainSpec.fewshot_every_steps={self.fewshot_every_steps} must be >= 0 "
                "(0 turns the few-shot evaluation off)"
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

    def _check_init_from(self) -> None:
        if self.init_from_head not in INIT_FROM_HEADS:
            raise ValueError(
                f"TrainSpec.init_from_head={self.init_from_head!r} is unknown; use one of "
                f"{INIT_FROM_HEADS} (None: fine-tuning replaces it, upcycling keeps a fitting one)"
            )
        if self.init_from is not None and not self.init_from.strip():
            raise ValueError(
                "TrainSpec.init_from='' names no checkpoint; give a run directory or a "
                "checkpoint path, or None to train from scratch"
            )
        if self.init_from_format is not None:
            if self.init_from_format not in CHECKPOINT_FORMATS:
                raise ValueError(
                    f"TrainSpec.init_from_format={self.init_from_format!r} is unknown; use one "
                    f"of {tuple(CHECKPOINT_FORMATS)} (or None to detect it)"
                )
            if self.init_from is None:
                raise ValueError(
                    f"TrainSpec.init_from_format={self.init_from_format!r} is set but "
                    "TrainSpec.init_from is not; give the checkpoint to fine-tune from"
                )

    def total_steps(self, batch_size: int, num_train_examples: int) -> int:
        if self.num_epochs is None:
            return self.num_steps
        return max(1, int(self.num_epochs * num_train_examples / batch_size))


DECAYS = ("linear", "cosine")
OPTIMIZERS = ("adam", "sgd_momentum")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class OptimizerSpec(Spec):
    """Linear warm-up, then linear or cosine decay, of one of two optimisers:

    - 'adam': Adam with decoupled weight decay (pre-training; b1, b2, weight_decay);
    - 'sgd_momentum': SGD with heavy-ball `momentum`, the ViT/V-MoE fine-tuning recipe, which
      has no weight decay (so weight_decay must be 0).
    """

    name: str = "adam"
    momentum: float = 0.9
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
        if self.name not in OPTIMIZERS:
            raise ValueError(
                f"OptimizerSpec.name={self.name!r} is unknown; use one of {OPTIMIZERS}"
            )
        if not 0 <= self.momentum < 1:
            raise ValueError(f"OptimizerSpec.momentum={self.momentum} must be in [0, 1); e.g. 0.9")
        if self.name == "sgd_momentum" and self.weight_decay:
            raise ValueError(
                f"OptimizerSpec.weight_decay={self.weight_decay} is not applied by "
                "OptimizerSpec.name='sgd_momentum' (fine-tuning uses none); set it to 0.0"
            )
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
    # FSDP: also split weights and optimizer state over 'data' (harness/runtime/fsdp.py).
    shard_params_over_data: bool = False

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
