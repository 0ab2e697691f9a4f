"""Classification losses: softmax or sigmoid cross-entropy, optional label smoothing."""

import jax
import jax.numpy as jnp
import optax

LOSSES = ("softmax", "sigmoid")


def classification_loss(
    logits: jax.Array, labels: jax.Array, kind: str = "softmax", label_smoothing: float = 0.0
) -> jax.Array:
    """Per-example loss [B] of integer labels [B] under logits [B, K].

    'sigmoid' is the per-class binary cross-entropy (summed over classes) that the upstream
    ViT/V-MoE code uses for pre-training; 'softmax' is the usual multi-class cross-entropy.
    """
    if kind not in LOSSES:
        raise ValueError(f"loss={kind!r} is unknown; use one of {LOSSES}")
    num_classes = logits.shape[-1]
    targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    logits = logits.astype(jnp.float32)
    if kind == "softmax":
        return optax.softmax_cross_entropy(logits, targets)
    return jnp.sum(optax.sigmoid_binary_cross_entropy(logits, targets), axis=-1)
