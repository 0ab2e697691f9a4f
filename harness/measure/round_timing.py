"""Comparing two configs' interleaved step times round by round (no JAX: reports use it).

`harness.measure.step_timing` saves each config's median step per round as `round_ms`. On a
shared machine, pooled medians 1% apart are noise (the claims suite once called a 1.01x
step rate "faster"). A speedup counts only when it clears the rounds' own spread.
"""

import statistics
from typing import Any


def round_speedups(candidate: dict[str, Any], baseline: dict[str, Any]) -> list[float]:
    """baseline / candidate step time, round by round (> 1: the candidate is faster), from
    StepTime dicts as saved; empty when either lacks per-round times."""
    ours, theirs = candidate.get("round_ms") or (), baseline.get("round_ms") or ()
    if len(ours) != len(theirs):
        return []
    return [b / a for a, b in zip(ours, theirs, strict=True)]


def clearly_faster(speedups: list[float]) -> bool:
    """Faster in every round, with the median speedup above 1 by more than half the range
    of the per-round speedups: a margin beyond the rounds' spread."""
    if not speedups:
        return False
    spread = (max(speedups) - min(speedups)) / 2
    return min(speedups) > 1 and statistics.median(speedups) - 1 > spread
