"""Issue 26: SuiteSpec settings that would misplace the suite or crash it after all the
training are refused at construction (root='' trained into the current directory), and the
claims report handles a sweep of one k (sweep_ks=[2] crashed it after all training)."""

import pytest

from harness.config.suite_spec import SuiteSpec
from harness.reporting import claims
from harness.reporting.runs import Run

RUNS = [("vit", "gin/cpu/vit.gin", [])]


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"root": ""}, "SuiteSpec.root='' is empty"),
        ({"report": " "}, "SuiteSpec.report=' ' is empty"),
        ({"sweep_ks": []}, "SuiteSpec.sweep_ks=[]"),
        ({"sweep_ks": [0]}, "SuiteSpec.sweep_ks=[0]"),
        ({"sweep_ks": ["2"]}, "SuiteSpec.sweep_ks=['2']"),
        ({"sweep_capacities": [1.0, float("inf")]}, "SuiteSpec.sweep_capacities"),
        ({"sweep_capacities": [-1]}, "SuiteSpec.sweep_capacities=[-1]"),
        ({"sweep_timing_batch_size": 10**8}, "sweep_timing_batch_size=100000000"),
    ],
)
def test_bad_suite_settings_are_refused_before_training(fields, expected):
    with pytest.raises(ValueError) as caught:
        SuiteSpec(runs=RUNS, **fields)
    # gin appends the configurable's name on a second line; harness.suite shows the first.
    first = str(caught.value).splitlines()[0]
    assert expected in first, first


def test_a_single_k_is_a_valid_suite():
    assert SuiteSpec(runs=RUNS, sweep_ks=[2]).sweep_ks == [2]


def _vmoe(ks: list[int], capacities=(1.0, 0.5)) -> claims.Seeds:
    points = [
        {
            "routing": routing,
            "k": k,
            "capacity_factor": c,
            "top1": 0.5 + 0.1 * c + 0.01 * k + (0.02 if routing == "bpr" else 0.0),
            "dropped_fraction": 1 - min(c, 1.0),
            "gflops_per_image": 0.01 * k,
            "ms_per_batch_p50": 1.0,
        }
        for routing in ("vanilla", "bpr")
        for k in ks
        for c in capacities
    ]
    results = {
        "run": {"family": "vmoe", "config": ""},
        "eval": {"eval/top1": 0.6},
        "model": {"gflops_per_image": 0.01, "params_total": 10, "params_active": 5},
    }
    runs = [
        Run(
            name="seed_0",
            path="/runs/vmoe/seed_0",
            results=results,
            sweep={"points": points},
            scalars={},
        )
    ]
    return claims.Seeds("vmoe", runs, diverged=0)


@pytest.mark.parametrize(
    "ks, bpr, adaptive",
    [
        ([2], "reproduced", "no k=1 points"),
        ([1], "no vanilla, bpr points", "no k=2 points"),
        ([1, 2], "reproduced", "reproduced"),
    ],
)
def test_claims_with_the_ks_the_sweep_has(tmp_path, ks, bpr, adaptive):
    writer = claims.Writer(str(tmp_path / "report.md"))
    seeds = {"vmoe": _vmoe(ks)}
    claims.claim_bpr(writer, seeds)
    claims.claim_adaptive_k(writer, seeds)
    verdicts = dict(writer.summary)
    assert bpr in verdicts["2. BPR degrades more gracefully than vanilla"], verdicts
    assert adaptive in verdicts["3. k=2-trained V-MoE runs at k=1"], verdicts
