"""Optimiser and learning-rate schedule from optax, as the ViT and V-MoE papers train."""

import dataclasses

import gin
import jax
import optax

from models.specs import Spec

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
        if self.learning_rate <= 0:
            raise ValueError(
                f"OptimizerSpec.learning_rate={self.learning_rate} must be positive; e.g. 1e-3"
            )


def make_schedule(spec: OptimizerSpec, total_steps: int) -> optax.Schedule:
    warmup = min(spec.warmup_steps, max(total_steps - 1, 0))
    decay_steps = max(total_steps - warmup, 1)
    if spec.decay == "linear":
        decay = optax.linear_schedule(spec.learning_rate, spec.end_learning_rate, decay_steps)
    else:
        decay = optax.cosine_decay_schedule(
            spec.learning_rate, decay_steps, alpha=spec.end_learning_rate / spec.learning_rate
        )
    if warmup == 0:
        return decay
    return optax.join_schedules(
        [optax.linear_schedule(0.0, spec.learning_rate, warmup), decay], [warmup]
    )


def _decay_mask(params):
    # Weight decay on matrices only, not on biases, LayerNorm scales or position tables'
    # 1-d relatives, as in the ViT/big_vision recipes.
    return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def make_optimizer(spec: OptimizerSpec, total_steps: int) -> optax.GradientTransformation:
    adam = optax.adamw(
        make_schedule(spec, total_steps),
        b1=spec.b1,
        b2=spec.b2,
        weight_decay=spec.weight_decay,
        mask=_decay_mask,
    )
    if spec.grad_clip_norm:
        return optax.chain(optax.clip_by_global_norm(spec.grad_clip_norm), adam)
    return adam
