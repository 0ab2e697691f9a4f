"""Interleaved timing rounds for the bench scripts: each round runs every variant in turn, so
drift in background load hits all of them, and ratios are taken round by round."""

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


def timed_rounds(
    calls: dict[str, Callable[[], Any]], rounds: int, steps: int
) -> dict[str, list[float]]:
    """Mean seconds per call of each variant, one entry per round, variants interleaved."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(steps):
                jax.block_until_ready(call())
            times[name].append((time.perf_counter() - start) / steps)
    return times


def ratio_cell(times: dict[str, list[float]], numerator: str, denominator: str) -> str:
    """numerator / denominator round by round, as 'median [min, max]'."""
    ratios = [a / b for a, b in zip(times[numerator], times[denominator], strict=True)]
    return f"{statistics.median(ratios):.3f} [{min(ratios):.3f}, {max(ratios):.3f}]"
