"""Token-to-expert routing for sparse MoE: capacity, top-k dispatch (vanilla and BPR), aux losses.

Everything here is pure JAX on groups of tokens, so it can be tested with hand-made gates and
reused by any layer. Shapes: G groups, S tokens per group, E experts, k choices per token, Cap
buffer slots per expert (its capacity). Routing is computed independently per group; a group is
the unit of capacity (V-MoE, Riquelme et al. 2021).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from models.specs import check_routing_config


def expert_capacity(group_size: int, num_experts: int, k: int, capacity_factor: float) -> int:
    """Buffer slots per expert and group: ceil(k * group_size * C / E), at least 1.

    At C = 1 the E buffers together hold exactly the k * group_size assignments, so C is the
    slack relative to perfect balance.
    """
    check_routing_config(num_experts, k, capacity_factor)
    if group_size < 1:
        raise ValueError(f"group_size={group_size} must be >= 1; give each group some tokens")
    # The small epsilon keeps e.g. 2 * 8 * 1.05 / 4 from rounding up because of float error.
    return max(1, math.ceil(k * group_size * capacity_factor / num_experts - 1e-9))


class Assignments(NamedTuple):
    """Where each of a token's k choices went, as indices: O(G*S*k), whatever E and Cap are.

    expert: [G, S, k] int32, the token's j-th choice of expert (gates descending).
    slot: [G, S, k] int32, its position in that expert's buffer (meaningless where not kept).
    kept: [G, S, k] bool, whether the choice fit in the buffer.
    gate: [G, S, k] the (unrenormalised) gate of the choice.
    """

    expert: jax.Array
    slot: jax.Array
    kept: jax.Array
    gate: jax.Array

    def selected(self, num_experts: int) -> jax.Array:
        """[G, S, E] 0/1: the token's top-k choices before capacity is applied."""
        return jax.nn.one_hot(self.expert, num_experts, dtype=self.gate.dtype).sum(axis=2)


class Routing(NamedTuple):
    """The dense (one-hot) form of `Assignments`, for the einsum dispatch and for tests.

    dispatch: [G, S, E, Cap] 0/1, token s of group g occupies slot c of expert e.
    combine: [G, S, E, Cap], dispatch times the token's (unrenormalised) gate for e.
    selected: [G, S, E] 0/1, the token's top-k choices before capacity is applied.
    """

    dispatch: jax.Array
    combine: jax.Array
    selected: jax.Array


def to_dense(assignments: Assignments, num_experts: int, capacity: int) -> Routing:
    """The one-hot form, built as vmoe builds it: each (token, expert) pair's slot first,
    then one one-hot over slots. Contracting [G, S, k, E] with [G, S, k, Cap] over k instead
    costs two batched matmuls per layer in the forward and backward pass (issue 27)."""
    a = assignments
    chose = a.expert[..., None] == jnp.arange(num_experts, dtype=a.expert.dtype)  # [G, S, k, E]
    # top_k never repeats an expert for one token, so at most one choice matches each
    # (token, expert); a dropped or unchosen pair gets slot -1, whose one-hot row is zero.
    kept_slot = jnp.where(a.kept, a.slot, -1)
    slot = jnp.max(jnp.where(chose, kept_slot[..., None], -1), axis=2)  # [G, S, E]
    gate = jnp.sum(jnp.where(chose, a.gate[..., None], 0), axis=2)  # [G, S, E]
    dispatch = jax.nn.one_hot(slot, capacity, dtype=a.gate.dtype)
    combine = dispatch * gate[..., None]
    return Routing(dispatch=dispatch, combine=combine, selected=a.selected(num_experts))


def _assign_in_order(gates: jax.Array, k: int, capacity: int) -> Assignments:
    """Top-k assignments where token order within a group is the placement order."""
    num_experts = gates.shape[-1]
    top_gate, top_expert = jax.lax.top_k(gates, k)  # [G, S, k]
    # [G, k, S, E]: choice-major so every token's top-1 is placed before any top-2, and so on.
    choices = jax.nn.one_hot(jnp.swapaxes(top_expert, 1, 2), num_experts, dtype=jnp.int32)
    g, _, s, e = choices.shape
    # Slot of each assignment in its expert's buffer = number of earlier assignments to it.
    position = jnp.cumsum(choices.reshape(g, k * s, e), axis=1).reshape(g, k, s, e) - 1
    slot = jnp.swapaxes(jnp.sum(position * choices, axis=-1), 1, 2)  # [G, S, k]
    return Assignments(
        expert=top_expert.astype(jnp.int32),
        slot=slot.astype(jnp.int32),
        kept=slot < capacity,
        gate=top_gate,
    )


def top_k_assignments(
    gates: jax.Array, k: int, capacity: int, batch_priority: bool = False
) -> Assignments:
    """Routes each token to its k highest-gate experts, dropping assignments past capacity.

    Vanilla routing places tokens in token order, so late tokens are the ones dropped when an
    expert is oversubscribed. Batch Prioritized Routing (BPR) places them in order of priority
    (their max gate, descending, ties by token index) so the tokens the router is most sure
    about are kept; results come back in the original token order either way.

    Args:
      gates: [G, S, E] routing weights (softmax outputs).
      k: number of experts per token.
      capacity: buffer slots per expert and group.
      batch_priority: whether to use BPR.

    Returns:
      Assignments, each [G, S, k].
    """
    if not batch_priority:
        return _assign_in_order(gates, k, capacity)
    priority = jnp.max(gates, axis=-1)  # [G, S]
    order = jnp.argsort(priority, axis=-1, stable=True, descending=True)
    inverse = jnp.argsort(order, axis=-1)
    sorted_gates = jnp.take_along_axis(gates, order[..., None], axis=1)
    assigned = _assign_in_order(sorted_gates, k, capacity)
    return Assignments(*(jnp.take_along_axis(x, inverse[..., None], axis=1) for x in assigned))


def top_k_dispatch(
    gates: jax.Array, k: int, capacity: int, batch_priority: bool = False
) -> Routing:
    """`top_k_assignments` in dense form: dispatch/combine [G, S, E, capacity], selected
    [G, S, E]."""
    return to_dense(
        top_k_assignments(gates, k, capacity, batch_priority), gates.shape[-1], capacity
    )


def cv_squared(values: jax.Array) -> jax.Array:
    """(std / mean)^2 over the last axis (population variance), mean over the rest."""
    mean = jnp.mean(values, axis=-1)
    return jnp.mean(jnp.var(values, axis=-1) / (mean**2 + 1e-10))


def importance_loss(gates: jax.Array) -> jax.Array:
    """V-MoE importance loss: (std/mean)^2 over experts of the per-expert summed gate.

    Args:
      gates: [G, S, E] softmax routing weights over all experts (not only the selected ones).

    Returns:
      Scalar, the mean over groups.
    """
    return cv_squared(jnp.sum(gates, axis=1))


def load_loss(
    clean_logits: jax.Array, noisy_logits: jax.Array, k: int, noise_std: float
) -> jax.Array:
    """V-MoE load loss: (std/mean)^2 over experts of each expert's expected token count.

    A token would pick expert e if e's logit plus fresh noise beat the token's k-th largest noisy
    logit t, which happens with probability 1 - Phi((t - clean_logit_e) / noise_std). Unlike the
    hard count, this is differentiable in the router weights.

    Args:
      clean_logits: [G, S, E] router logits before noise.
      noisy_logits: [G, S, E] the same logits plus the noise used for routing.
      k: number of experts per token.
      noise_std: standard deviation of the routing noise (> 0).

    Returns:
      Scalar, the mean over groups.
    """
    return cv_squared(expected_load(clean_logits, noisy_logits, k, noise_std))


def expected_load(
    clean_logits: jax.Array, noisy_logits: jax.Array, k: int, noise_std: float
) -> jax.Array:
    """[G, E] each expert's expected number of tokens per group (the load loss's argument)."""
    threshold = jax.lax.top_k(noisy_logits, k)[0][..., -1:]  # [G, S, 1]
    prob = 1.0 - jax.scipy.stats.norm.cdf((threshold - clean_logits) / noise_std)
    return jnp.sum(prob, axis=1)


def switch_balance_loss(gates: jax.Array) -> jax.Array:
    """Switch-Transformer balance loss used by WideNet: E * sum_e(frac_tokens_e * mean_prob_e).

    frac_tokens_e (fraction of tokens whose top-1 expert is e) carries no gradient; mean_prob_e
    does, pushing probability away from overloaded experts. Equals 1 at perfect balance.

    Args:
      gates: [G, S, E] softmax routing weights.

    Returns:
      Scalar, the mean over groups.
    """
    num_experts = gates.shape[-1]
    top1 = jax.nn.one_hot(jnp.argmax(gates, axis=-1), num_experts, dtype=gates.dtype)
    frac_tokens = jnp.mean(top1, axis=1)  # [G, E]
    mean_prob = jnp.mean(gates, axis=1)  # [G, E]
    return jnp.mean(num_experts * jnp.sum(frac_tokens * mean_prob, axis=-1))
