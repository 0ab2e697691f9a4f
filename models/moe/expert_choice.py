"""Expert Choice routing (Zhou et al. 2022): each expert picks its tokens, not the reverse.

With router scores S = softmax(X W) [S tokens, E experts] of one group, expert e takes the
`capacity` tokens with the highest score S[:, e] (capacity = ceil(k * S * C / E), at most S):

    G, I = TopK(S^T, capacity)       # [E, capacity] gates and token indices
    y_s = sum_{e, c : I[e, c] = s} G[e, c] * FFN_e(x_s)

Every expert is exactly full, so no balance loss is needed; a token is processed by anywhere
from 0 to E experts (a token no expert took passes through the block on its residual alone).
Pure JAX on groups, like `models.moe.routing`: G groups, S tokens, E experts, Cap slots.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp


class ExpertChoice(NamedTuple):
    """Which token fills each expert slot.

    token: [G, E, Cap] int32, index within its group of the token in slot c of expert e.
    gate: [G, E, Cap] that token's router score for e (its combine weight).
    """

    token: jax.Array
    gate: jax.Array

    def taken(self, num_tokens: int) -> jax.Array:
        """[G, S, E] 0/1: whether expert e took token s (top_k never repeats a token)."""
        one_hot = jax.nn.one_hot(self.token, num_tokens, dtype=self.gate.dtype)  # [G,E,Cap,S]
        return jnp.swapaxes(jnp.sum(one_hot, axis=2), 1, 2)

    def combine_weights(self, num_tokens: int) -> jax.Array:
        """[G, S, E]: the gate of (s, e) where e took s, else 0 (dense form, for tests)."""
        one_hot = jax.nn.one_hot(self.token, num_tokens, dtype=self.gate.dtype)
        return jnp.einsum("gecs,gec->gse", one_hot, self.gate)


def expert_choice_capacity(group_tokens: int, capacity: int) -> int:
    """An expert cannot take more tokens than its group has."""
    return min(capacity, group_tokens)


def expert_choice_assignments(gates: jax.Array, capacity: int) -> ExpertChoice:
    """Each expert's top-`capacity` tokens by score.

    Args:
      gates: [G, S, E] router scores (softmax over experts).
      capacity: slots per expert and group, 1 <= capacity <= S.

    Returns:
      ExpertChoice, each field [G, E, capacity].
    """
    gate, token = jax.lax.top_k(jnp.swapaxes(gates, 1, 2), capacity)
    return ExpertChoice(token=token.astype(jnp.int32), gate=gate)


def selection_spread(coverage: jax.Array, tokens: int, experts: int, capacity: int) -> jax.Array:
    """How distinct the experts' picks are: 0 when all E experts took the same `capacity`
    tokens (coverage capacity / S), 1 when no token was taken twice (coverage
    min(1, E * capacity / S)); `coverage` is the share of the S tokens some expert took.

    Expert choice fills every expert by construction, so its load cannot show collapse; the
    way it degrades is its experts all wanting the same tokens. Independent random picks at
    k * C = 1 give 0.5 to 0.6 (coverage 1 - (1 - 1/E)^E).
    """
    lowest = capacity / tokens
    highest = min(1.0, experts * capacity / tokens)
    if highest <= lowest:  # one expert, or one expert's capacity already covers every token
        return jnp.ones_like(coverage)
    return jnp.clip((coverage - lowest) / (highest - lowest), 0.0, 1.0)


def expert_choice_dispatch(
    choice: ExpertChoice, inputs: jax.Array, expert_fn, num_tokens: int
) -> jax.Array:
    """Gathers each expert's tokens, runs the experts, and scatter-adds the gate-weighted
    outputs back to their tokens.

    Args:
      choice: the slots' tokens and gates, [G, E, Cap].
      inputs: [G, S, D] tokens.
      expert_fn: [E, G, Cap, D] -> [E, G, Cap, D'].
      num_tokens: S.

    Returns:
      [G, S, D'] the gate-weighted sum of the outputs of the experts that took each token.
    """
    groups = inputs.shape[0]
    group_index = jnp.arange(groups)[:, None, None]
    expert_inputs = inputs[group_index, choice.token]  # [G, E, Cap, D]
    expert_outputs = expert_fn(jnp.swapaxes(expert_inputs, 0, 1))  # [E, G, Cap, D']
    weighted = jnp.swapaxes(expert_outputs, 0, 1) * choice.gate[..., None].astype(
        expert_outputs.dtype
    )
    outputs = jnp.zeros((groups, num_tokens, weighted.shape[-1]), weighted.dtype)
    return outputs.at[group_index, choice.token].add(weighted)
