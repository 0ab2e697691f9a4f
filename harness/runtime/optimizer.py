"""Optimiser and learning-rate schedule from optax, as the ViT and V-MoE papers train
(Adam) and fine-tune (SGD with momentum)."""

import jax
import optax

from harness.config.train_spec import OptimizerSpec
from models import scan_layout


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


def decay_mask(params):
    """Weight decay on matrices only, not on biases, LayerNorm scales or position tables'
    1-d relatives, as in the ViT/big_vision recipes. Judged per block: a scanned stack's
    depth axis does not make its biases matrices (models/scan_layout.py)."""

    def decays(path, p) -> bool:
        name = "/".join(str(getattr(key, "key", key)) for key in path)
        return scan_layout.per_block_ndim(name, p) >= 2

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(spec: OptimizerSpec, total_steps: int) -> optax.GradientTransformation:
    schedule = make_schedule(spec, total_steps)
    if spec.name == "sgd_momentum":
        # The ViT and V-MoE fine-tuning recipe: heavy-ball momentum, no weight decay.
        base = optax.sgd(schedule, momentum=spec.momentum)
    else:
        base = optax.adamw(
            schedule, b1=spec.b1, b2=spec.b2, weight_decay=spec.weight_decay, mask=decay_mask
        )
    if spec.grad_clip_norm:
        return optax.chain(optax.clip_by_global_norm(spec.grad_clip_norm), base)
    return base
