"""models.moe.routing: capacity, top-k dispatch (vanilla, BPR), aux losses, on hand-made gates."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.moe import routing


def _random_gates(seed: int, groups: int, tokens: int, experts: int) -> jax.Array:
    logits = jax.random.normal(jax.random.PRNGKey(seed), (groups, tokens, experts))
    return jax.nn.softmax(2.0 * logits, axis=-1)


def test_expert_capacity_formula() -> None:
    assert routing.expert_capacity(8, 4, 2, 1.0) == 4
    assert routing.expert_capacity(8, 4, 2, 1.05) == 5  # ceil(4.2)
    assert routing.expert_capacity(197, 32, 2, 1.05) == math.ceil(2 * 197 * 1.05 / 32)
    assert routing.expert_capacity(10, 4, 1, 0.4) == 1  # ceil(1.0), not 2 from float error
    assert routing.expert_capacity(1, 32, 1, 0.01) == 1  # never zero slots


@pytest.mark.parametrize(
    ("experts", "k", "capacity_factor", "message"),
    [
        (2, 3, 1.0, r"num_selected_experts k=3 exceeds num_experts E=2; set k <= E"),
        (4, 0, 1.0, r"num_selected_experts k=0 must be >= 1; set 1 <= k <= E=4"),
        (4, 1, 0.0, r"capacity_factor C=0.0 must be > 0"),
        (4, 1, -1.0, r"capacity_factor C=-1.0 must be > 0"),
        (0, 1, 1.0, r"num_experts E=0 must be >= 1"),
    ],
)
def test_expert_capacity_errors_name_value_and_fix(
    experts: int, k: int, capacity_factor: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as info:
        routing.expert_capacity(8, experts, k, capacity_factor)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("batch_priority", [False, True])
@pytest.mark.parametrize(("k", "capacity"), [(1, 3), (2, 3), (2, 5), (3, 2)])
def test_dispatch_respects_capacity_and_slots(k: int, capacity: int, batch_priority: bool) -> None:
    gates = _random_gates(0, groups=3, tokens=16, experts=4)
    out = routing.top_k_dispatch(gates, k, capacity, batch_priority)
    dispatch = np.asarray(out.dispatch)
    assert dispatch.shape == (3, 16, 4, capacity)
    assert set(np.unique(dispatch)) <= {0.0, 1.0}
    assert dispatch.sum(axis=1).max() <= 1  # each slot holds at most one token
    assert dispatch.sum(axis=(1, 3)).max() <= capacity  # no expert over capacity
    assert dispatch.sum(axis=3).max() <= 1  # a token takes at most one slot of an expert
    per_expert = dispatch.sum(axis=3)
    # Kept assignments are a subset of the top-k choices; each token has exactly k choices.
    np.testing.assert_array_equal(per_expert * np.asarray(out.selected), per_expert)
    np.testing.assert_array_equal(np.asarray(out.selected).sum(axis=-1), k)
    topk = np.argsort(-np.asarray(gates), axis=-1)[..., :k]
    np.testing.assert_array_equal(
        np.take_along_axis(np.asarray(out.selected), topk, axis=-1), np.ones_like(topk)
    )
    # Combine weights are the raw softmax values of kept assignments (not renormalised).
    np.testing.assert_allclose(out.combine, dispatch * np.asarray(gates)[..., None], rtol=1e-6)
    # Slots are filled from 0 without gaps.
    filled = dispatch.sum(axis=1)  # [G, E, Cap]
    assert np.all(np.diff(filled, axis=-1) <= 0)


@pytest.mark.parametrize("batch_priority", [False, True])
def test_large_capacity_drops_nothing(batch_priority: bool) -> None:
    gates = _random_gates(1, groups=2, tokens=12, experts=4)
    k = 2
    capacity = routing.expert_capacity(12, 4, k, capacity_factor=4 / k)  # = all tokens
    out = routing.top_k_dispatch(gates, k, capacity, batch_priority)
    assert float(out.dispatch.sum()) == k * 2 * 12
    np.testing.assert_array_equal(out.dispatch.sum(axis=-1), out.selected)


def test_all_top1_choices_are_placed_before_any_top2() -> None:
    # Token 0 prefers expert 1 then 0; tokens 1 and 2 prefer expert 0 then 1. Capacity 2.
    gates = jnp.array([[[0.3, 0.7], [0.8, 0.2], [0.6, 0.4]]])
    out = routing.top_k_dispatch(gates, k=2, capacity=2)
    kept = np.asarray(out.dispatch.sum(axis=-1))[0]  # [S, E]
    # Top-1 pass: t0->e1, t1->e0, t2->e0 (fills e0). Top-2 pass: t0->e0 dropped, t1->e1, t2->e1
    # dropped. Token-by-token placement would instead give t0 a slot of e0 and drop t2's top-1.
    np.testing.assert_array_equal(kept, [[0, 1], [1, 1], [1, 0]])
    slots = np.argmax(np.asarray(out.dispatch)[0], axis=-1)
    assert slots[0, 1] == 0 and slots[1, 1] == 1  # e1: t0 (top-1) before t1 (top-2)
    assert slots[1, 0] == 0 and slots[2, 0] == 1


def test_vanilla_drops_latest_tokens_and_bpr_keeps_highest_priority() -> None:
    # All four tokens choose expert 0; it has room for two.
    p0 = jnp.array([0.6, 0.9, 0.7, 0.8])
    gates = jnp.stack([p0, 1.0 - p0], axis=-1)[None]
    vanilla = routing.top_k_dispatch(gates, k=1, capacity=2, batch_priority=False)
    np.testing.assert_array_equal(vanilla.dispatch[0, :, 0, :], [[1, 0], [0, 1], [0, 0], [0, 0]])
    bpr = routing.top_k_dispatch(gates, k=1, capacity=2, batch_priority=True)
    # Results in original token order; slots in priority order (t1 = 0.9 first, then t3 = 0.8).
    np.testing.assert_array_equal(bpr.dispatch[0, :, 0, :], [[0, 0], [1, 0], [0, 0], [0, 1]])
    np.testing.assert_allclose(bpr.combine[0, :, 0, :], [[0, 0], [0.9, 0], [0, 0], [0, 0.8]])
    assert float(bpr.dispatch[..., 1, :].sum()) == 0


def test_bpr_ties_keep_token_order() -> None:
    gates = jnp.tile(jnp.array([0.7, 0.3]), (1, 4, 1))
    bpr = routing.top_k_dispatch(gates, k=1, capacity=2, batch_priority=True)
    np.testing.assert_array_equal(bpr.dispatch[0, :, 0, :], [[1, 0], [0, 1], [0, 0], [0, 0]])


def test_bpr_keeps_exactly_the_highest_priority_tokens_per_expert() -> None:
    gates = np.asarray(_random_gates(2, groups=3, tokens=32, experts=4))
    capacity = 3
    out = routing.top_k_dispatch(jnp.asarray(gates), k=1, capacity=capacity, batch_priority=True)
    kept = np.asarray(out.dispatch).sum(axis=-1)  # [G, S, E]
    priority = gates.max(axis=-1)
    choice = gates.argmax(axis=-1)
    for g in range(3):
        for e in range(4):
            chose = np.flatnonzero(choice[g] == e)
            best = chose[np.argsort(-priority[g, chose], kind="stable")][:capacity]
            np.testing.assert_array_equal(np.flatnonzero(kept[g, :, e]), np.sort(best))


def _cv2(values: np.ndarray) -> float:
    return float(np.var(values) / np.mean(values) ** 2)


def test_importance_loss_matches_hand_computation() -> None:
    gates = np.array(
        [
            [[0.7, 0.2, 0.1], [0.5, 0.25, 0.25], [0.1, 0.1, 0.8]],
            [[0.2, 0.6, 0.2], [0.3, 0.3, 0.4], [0.6, 0.3, 0.1]],
        ]
    )
    # Group 0 importance = [1.3, 0.55, 1.15]; group 1 = [1.1, 1.2, 0.7].
    expected = (_cv2(np.array([1.3, 0.55, 1.15])) + _cv2(np.array([1.1, 1.2, 0.7]))) / 2
    assert float(routing.importance_loss(jnp.asarray(gates))) == pytest.approx(expected, rel=1e-5)
    assert float(routing.importance_loss(jnp.full((1, 4, 3), 1 / 3))) == pytest.approx(0, abs=1e-7)


def test_load_loss_matches_hand_computation() -> None:
    clean = np.array([[[1.0, 0.5, -0.5], [0.2, 0.1, 0.0]], [[0.0, 2.0, 1.0], [-1.0, 0.3, 0.4]]])
    noise = np.array([[[0.1, -0.2, 0.3], [-0.1, 0.4, 0.0]], [[0.2, 0.0, -0.3], [0.5, -0.5, 0.1]]])
    noisy = clean + noise
    k, sigma = 2, 0.5

    def phi(z: float) -> float:
        return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))

    per_group = []
    for g in range(2):
        load = np.zeros(3)
        for s in range(2):
            threshold = sorted(noisy[g, s], reverse=True)[k - 1]
            for e in range(3):
                load[e] += 1.0 - phi((threshold - clean[g, s, e]) / sigma)
        per_group.append(_cv2(load))
    got = routing.load_loss(jnp.asarray(clean), jnp.asarray(noisy), k, sigma)
    assert float(got) == pytest.approx(np.mean(per_group), rel=1e-5)


def test_switch_balance_loss_matches_hand_computation() -> None:
    gates = np.array([[[0.7, 0.2, 0.1], [0.5, 0.25, 0.25], [0.1, 0.1, 0.8], [0.2, 0.6, 0.2]]])
    # Top-1 experts: 0, 0, 2, 1 -> frac = [0.5, 0.25, 0.25]; mean prob = [0.375, 0.2875, 0.3375].
    expected = 3 * (0.5 * 0.375 + 0.25 * 0.2875 + 0.25 * 0.3375)
    assert float(routing.switch_balance_loss(jnp.asarray(gates))) == pytest.approx(expected)
    uniform_choices = jnp.asarray(np.eye(3)[None] * 0.5 + 0.5 / 3)
    assert float(routing.switch_balance_loss(uniform_choices)) == pytest.approx(1.0)


def test_losses_are_differentiable() -> None:
    logits = jax.random.normal(jax.random.PRNGKey(3), (2, 8, 4))
    noise = 0.25 * jax.random.normal(jax.random.PRNGKey(4), logits.shape)

    def total(x: jax.Array) -> jax.Array:
        gates = jax.nn.softmax(x + noise)
        return (
            routing.importance_loss(gates)
            + routing.load_loss(x, x + noise, 2, 0.25)
            + routing.switch_balance_loss(gates)
        )

    grad = jax.grad(total)(logits)
    assert bool(jnp.all(jnp.isfinite(grad)))
    assert float(jnp.abs(grad).sum()) > 0
