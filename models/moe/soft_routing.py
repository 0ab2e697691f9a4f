"""Soft MoE routing (Puigcerver et al. 2023): slots are soft mixtures of all tokens of a group.

For the tokens X [m, d] of one group and slot parameters Phi [d, n * p] (n experts, p slots
each), with both normalised as the paper does for stability at large d,

    L = l2_normalize(X, over d) @ (scale * l2_normalize(Phi, over d))   # [m, n * p] logits
    D = softmax(L, over tokens m)      # dispatch: each slot's convex mix of the tokens
    C = softmax(L, over slots n * p)   # combine: each token's convex mix of the slot outputs
    X~ = D^T X,   Y~_i = f_{floor(i / p)}(X~_i),   Y = C Y~

`scale` is one learned scalar. No token is dropped and every expert processes exactly p slots,
so there is nothing to balance. Shapes: G groups, S tokens, E experts, P slots per expert.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

L2_EPSILON = 1e-6  # The paper's Algorithm 2.


def l2_normalize(x: jax.Array, axis: int) -> jax.Array:
    """x / (||x|| + eps) along `axis` (the paper's Algorithm 2)."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    return x / (norm + L2_EPSILON)


class SoftWeights(NamedTuple):
    """dispatch: [G, S, E, P], sums to 1 over S for each slot (softmax over tokens).
    combine: [G, S, E, P], sums to 1 over (E, P) for each token (softmax over slots)."""

    dispatch: jax.Array
    combine: jax.Array


def soft_weights(inputs: jax.Array, phi: jax.Array, scale: jax.Array) -> SoftWeights:
    """Dispatch and combine weights of Soft MoE.

    Args:
      inputs: [G, S, D] tokens.
      phi: [D, E, P] slot parameters.
      scale: [] the learned scalar that sets the logits' temperature after normalisation.

    Returns:
      SoftWeights, each [G, S, E, P].
    """
    logits = jnp.einsum(
        "gsd,dep->gsep", l2_normalize(inputs, axis=-1), scale * l2_normalize(phi, axis=0)
    )
    dispatch = jax.nn.softmax(logits, axis=1)
    combine = jax.nn.softmax(logits, axis=(2, 3))
    return SoftWeights(dispatch=dispatch, combine=combine)


def dispatch_entropy(dispatch: jax.Array) -> jax.Array:
    """Mean over slots of the entropy of each slot's dispatch weights over the tokens of its
    group, divided by log S: 1 when every slot is the plain average of its group (the experts
    then all see the same input), near 0 when each slot copies one token.

    dispatch: [G, S, E, P], summing to 1 over S.
    """
    tokens = dispatch.shape[1]
    if tokens < 2:
        return jnp.zeros((), jnp.float32)
    per_slot = jnp.sum(jax.scipy.special.entr(dispatch.astype(jnp.float32)), axis=1)
    return jnp.mean(per_slot) / jnp.log(float(tokens))


def soft_dispatch(weights: SoftWeights, inputs: jax.Array, expert_fn) -> jax.Array:
    """Fills the slots, runs expert e on its P slots, and mixes the slot outputs per token.

    Args:
      weights: dispatch and combine weights, [G, S, E, P].
      inputs: [G, S, D] tokens.
      expert_fn: [E, G, P, D] -> [E, G, P, D'].

    Returns:
      [G, S, D'].
    """
    slots = jnp.einsum("gsep,gsd->egpd", weights.dispatch.astype(inputs.dtype), inputs)
    outputs = expert_fn(slots)
    return jnp.einsum("gsep,egpd->gsd", weights.combine.astype(outputs.dtype), outputs)
