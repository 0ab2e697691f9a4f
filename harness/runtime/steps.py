"""Train and eval steps: pure functions of (state, batch), jitted with shardings by the trainer."""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from praxis import base_layer

from harness.runtime.grad_accumulation import accumulating
from harness.runtime.losses import classification_loss
from models import scan_layout
from models.stats import HEALTH_SCALARS, LOAD, STATS, per_block

# Per-layer routing scalars of the train and eval steps (harness/measure/routing_health.py).
ROUTING_SCALARS = ("dropped_fraction", "unrouted_fraction", *HEALTH_SCALARS)
EXPERT_CLASS_PREFIX = "expert_class"
PER_IMAGE_PREFIX = "per_image_processed"
# Bins over [0, 1] of the per-image processed fraction, for its distribution across images.
PER_IMAGE_BINS = 20
# Train metrics that are maxima, not means, over micro-batches and over logged steps.
MAX_METRICS = ("train/max_attention_logit",)


class TrainState(struct.PyTreeNode):
    step: jax.Array
    params: Any
    opt_state: Any


def apply_model(
    model: base_layer.BaseLayer, params: Any, images: jax.Array, rng: jax.Array | None
) -> tuple[jax.Array, dict[str, Any]]:
    """Logits and the sown collections (aux losses, stats). rng=None means inference mode:
    no router noise, no dropout, and the eval-time routing settings."""
    context = base_layer.JaxContext.HParams(do_eval=rng is None)
    with base_layer.JaxContext.new_context(hparams=context):
        rngs = None if rng is None else {base_layer.RANDOM: rng}
        logits, collections = model.apply(
            {base_layer.PARAMS: params},
            images,
            rngs=rngs,
            mutable=[base_layer.AUX_LOSS, STATS],
        )
    if STATS in collections:
        stats = scan_layout.unscan_stats(collections[STATS], scan_layout.tree_segments(params))
        collections = {**collections, STATS: stats}
    return logits, collections


def aux_losses_by_name(collections: dict[str, Any]) -> dict[str, jax.Array]:
    """Weighted auxiliary losses summed over layers (and over WideNet's repeated calls)."""
    totals: dict[str, jax.Array] = {}
    flat = jax.tree_util.tree_flatten_with_path(
        collections.get(base_layer.AUX_LOSS, {}),
        is_leaf=lambda x: isinstance(x, base_layer.AuxLossStruct),
    )[0]
    for path, aux in flat:
        name = str(getattr(path[-1], "key", path[-1]))
        totals[name] = totals.get(name, 0.0) + jnp.sum(aux.value)
    return totals


def routing_metrics(collections: dict[str, Any], prefix: str) -> dict[str, jax.Array]:
    metrics = {}
    for name in ROUTING_SCALARS:
        for block, value in per_block(collections.get(STATS, {}), name).items():
            metrics[f"{prefix}/{name}/{block}"] = value
    return metrics


def load_metrics(collections: dict[str, Any], prefix: str) -> dict[str, jax.Array]:
    """Each MoE layer's [E] load share: the only vectors in the train metrics, E floats per
    layer (the eval step gets the same from its expert-by-class counts)."""
    loads = per_block(collections.get(STATS, {}), LOAD)
    return {f"{prefix}/{LOAD}/{block}": value for block, value in loads.items()}


def attention_metrics(collections: dict[str, Any]) -> dict[str, jax.Array]:
    """The largest pre-softmax attention logit over all blocks (ViT-22B blocks report it):
    the quantity QK-norm keeps from growing until training diverges."""
    logits = per_block(collections.get(STATS, {}), "max_attention_logit")
    if not logits:
        return {}
    return {"train/max_attention_logit": jnp.max(jnp.stack(list(logits.values())))}


def per_image_compute(collections: dict[str, Any], mask: jax.Array) -> dict[str, jax.Array]:
    """Sums describing how evenly the MoE layers spend compute across images (V-MoE's
    adaptive per-image compute): each image's processed fraction (the share of its tokens'
    expert assignments that fit in capacity) averaged over MoE blocks, as a sum, a sum of
    squares and a histogram over the batch's real images."""
    fractions = per_block(collections.get(STATS, {}), "processed_fraction_per_image")
    if not fractions:
        return {}
    per_image = jnp.mean(jnp.stack(list(fractions.values())), axis=0)
    bins = jnp.clip((per_image * PER_IMAGE_BINS).astype(jnp.int32), 0, PER_IMAGE_BINS - 1)
    return {
        f"{PER_IMAGE_PREFIX}/sum": jnp.sum(per_image * mask),
        f"{PER_IMAGE_PREFIX}/squares": jnp.sum(per_image**2 * mask),
        f"{PER_IMAGE_PREFIX}/histogram": jnp.sum(
            jax.nn.one_hot(bins, PER_IMAGE_BINS) * mask[:, None], axis=0
        ),
    }


def global_norm(tree: Any) -> jax.Array:
    """The l2 norm of all leaves together, as one reduction over their concatenation.

    optax.global_norm reduces each leaf on its own, and XLA:CPU compiles each of those
    reductions as its own kernel: about 3 s more compile time for a tiny ViT's train step
    (issue 27). Here XLA fuses the concatenation into a single reduction instead.
    """
    leaves = jax.tree_util.tree_leaves(tree)
    flat = jnp.concatenate([jnp.ravel(leaf).astype(jnp.float32) for leaf in leaves])
    return jnp.sqrt(jnp.sum(flat * flat))


def make_train_step(
    model: base_layer.BaseLayer,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    loss_kind: str,
    label_smoothing: float,
    base_rng: jax.Array,
    microbatches: int = 1,
) -> Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]:
    """The jittable train step; `microbatches` > 1 accumulates gradients over that many
    micro-batches of the batch before the one update (harness/runtime/grad_accumulation.py)."""

    def loss_and_metrics(params: Any, batch: dict[str, jax.Array], rng: jax.Array):
        logits, collections = apply_model(model, params, batch["image"], rng)
        ce = jnp.mean(classification_loss(logits, batch["label"], loss_kind, label_smoothing))
        aux = aux_losses_by_name(collections)
        total = ce + sum(aux.values())
        metrics = {
            "train/loss": total,
            "train/cross_entropy": ce,
            "train/accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
            **{f"train/aux/{name}": value for name, value in aux.items()},
            **routing_metrics(collections, "train/routing"),
            **load_metrics(collections, "train/routing"),
            **attention_metrics(collections),
        }
        return total, metrics

    loss_and_grad = accumulating(
        jax.value_and_grad(loss_and_metrics, has_aux=True), microbatches, MAX_METRICS
    )

    def train_step(state: TrainState, batch: dict[str, jax.Array]):
        # Folding the step into one base key makes each step's randomness independent of
        # how the run was split by restarts.
        rng = jax.random.fold_in(base_rng, state.step)
        (_, metrics), grads = loss_and_grad(state.params, batch, rng)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            **metrics,
            "train/grad_norm": global_norm(grads),
            "train/learning_rate": schedule(state.step),
        }
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    return train_step


def make_eval_step(
    model: base_layer.BaseLayer, loss_kind: str
) -> Callable[[Any, dict[str, jax.Array]], dict[str, jax.Array]]:
    """Sums over the batch (masked), so the trainer adds batches up exactly."""

    def eval_step(params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        logits, collections = apply_model(model, params, batch["image"], None)
        mask = batch["mask"]
        losses = classification_loss(logits, batch["label"], loss_kind)
        sums = {
            "correct": jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * mask),
            "loss": jnp.sum(losses * mask),
            "count": jnp.sum(mask),
        }
        # Routing statistics are per-batch means; weighting by the batch's real examples
        # keeps the padding of the last batch from counting.
        for name, value in routing_metrics(collections, "routing").items():
            sums[name] = value * jnp.sum(mask)
        # Expert-by-class counts [classes, experts] per MoE block: how often images of each
        # class chose each expert (top-k selections, before capacity).
        classes = jax.nn.one_hot(batch["label"], logits.shape[-1]) * mask[:, None]
        selections = per_block(collections.get(STATS, {}), "assignments_per_image")
        for block, per_image in selections.items():
            sums[f"{EXPERT_CLASS_PREFIX}/{block}"] = classes.T @ per_image
        sums.update(per_image_compute(collections, mask))
        return sums

    return eval_step
