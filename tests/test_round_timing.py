"""The speed verdict's rule: a speedup counts only beyond the interleaved rounds' spread."""

from harness.measure.round_timing import clearly_faster, round_speedups


def test_speedups_are_baseline_over_candidate_round_by_round():
    candidate = {"step_ms": 10.0, "round_ms": [10.0, 8.0]}
    baseline = {"step_ms": 12.0, "round_ms": [12.0, 12.0]}
    assert round_speedups(candidate, baseline) == [1.2, 1.5]


def test_missing_or_mismatched_rounds_give_no_speedups():
    assert round_speedups({"step_ms": 1.0}, {"step_ms": 2.0, "round_ms": [2.0]}) == []
    assert round_speedups({"round_ms": [1.0]}, {"round_ms": [2.0, 2.0]}) == []


def test_a_steady_speedup_is_faster():
    assert clearly_faster([1.28, 1.30, 1.29])


def test_a_one_percent_median_within_the_spread_is_not_faster():
    assert not clearly_faster([1.01, 1.03, 0.99])  # one round slower
    assert not clearly_faster([1.01, 1.002, 1.05])  # every round faster, but within spread
    assert not clearly_faster([])
