"""Claim 7 (Sparse Upcycling) on hand-made runs, and the suite wiring that sets its arms up:
each seed starts from that seed's 'vit' run, the dense arm trains for matched compute."""

import os

import gin
import pytest

from harness.config import gin_config
from harness.config.suite_spec import SuiteSpec, bindings_for
from harness.measure import params_flops
from harness.reporting import claims, upcycling_claim
from harness.reporting.runs import Run
from harness.suites import runner
from models.specs import ModelSpec

BATCH = 128


def _run(name: str, top1: float, gflops: float, steps: int) -> Run:
    results = {
        "run": {"family": "vit", "config": ""},
        "eval": {"eval/top1": top1},
        "model": {"gflops_per_image": gflops, "params_total": 1000, "params_active": 1000},
        "train": {"steps": steps, "batch_size": BATCH},
    }
    loss = [(step, 2.0 / step) for step in range(1, steps + 1, 10)]
    return Run(
        name=name, path=f"/runs/{name}", results=results, sweep=None, scalars={"train/loss": loss}
    )


def _seeds(name: str, top1s: list[float], gflops: float, steps: int) -> claims.Seeds:
    return claims.Seeds(name, [_run(name, t, gflops, steps) for t in top1s], diverged=0)


def _claim(tmp_path, upcycled_top1s: list[float], dense_steps: int) -> claims.Writer:
    writer = claims.Writer(str(tmp_path / "report.md"))
    seeds = {
        "vit": _seeds("vit", [0.70, 0.71, 0.72], gflops=0.004, steps=90),
        "vit_continued": _seeds("vit_continued", [0.80, 0.81, 0.82], 0.004, dense_steps),
        "vmoe_upcycled": _seeds("vmoe_upcycled", upcycled_top1s, gflops=0.005, steps=80),
    }
    upcycling_claim.claim_upcycling(writer, seeds, claims._pm, claims._verdict)
    return writer


def test_a_margin_beyond_the_larger_spread_at_matched_compute_is_reproduced(tmp_path):
    # 80 steps x 0.005 = 100 steps x 0.004: the budgets match exactly.
    writer = _claim(tmp_path, [0.839, 0.840, 0.841], dense_steps=100)
    assert writer.summary == [(upcycling_claim.TITLE, "**reproduced**")]
    text = "\n".join(writer.lines)
    assert "+0.0300 top-1, +0.02000 beyond the larger spread" in text
    assert "spent 1.000x the upcycled arm's extra compute" in text
    assert os.path.isfile(os.path.join(writer.plots_dir, "upcycling_loss.png"))


def test_within_the_spread_is_not_reproduced(tmp_path):
    writer = _claim(tmp_path, [0.814, 0.815, 0.816], dense_steps=100)
    assert writer.summary[0][1] == "**not reproduced**"


def test_a_dense_arm_short_of_compute_is_not_tested(tmp_path):
    writer = _claim(tmp_path, [0.839, 0.840, 0.841], dense_steps=80)  # 0.8x the compute
    assert writer.summary[0][1] == "**not tested** (compute not matched)"


def test_missing_runs_are_not_tested(tmp_path):
    writer = claims.Writer(str(tmp_path / "report.md"))
    upcycling_claim.claim_upcycling(writer, {}, claims._pm, claims._verdict)
    assert writer.summary[0][1] == claims._verdict(None)


def _gflops(gin_file: str, bindings: list[str]) -> float:
    gin_config.parse_gin([gin_file], bindings)
    try:
        return params_flops.analytic_gflops_per_image(ModelSpec())
    finally:
        gin.clear_config()


@pytest.mark.parametrize("suite", ["gin/suites/paper_claims.gin", "gin/suites/demo.gin"])
def test_each_arm_starts_from_its_seeds_vit_and_the_dense_arm_matches_the_compute(suite):
    gin_config.parse_gin([suite], [])
    spec = SuiteSpec()
    gin.clear_config()
    runs = {name: (gin_file, extra) for name, gin_file, extra in spec.runs}
    seed = 2
    start = f"TrainSpec.init_from='{spec.root}/vit/seed_{seed}'"
    arms = {}
    for name in ("vmoe_upcycled", "vit_continued"):
        gin_file, extra = runs[name]
        bindings = bindings_for(spec, extra, seed, runner.epochs_for(spec, name))
        assert start in bindings, name
        epochs = float(bindings[bindings.index(f"TrainSpec.seed={seed}") + 1].split("=")[1])
        arms[name] = epochs * _gflops(gin_file, bindings)
    assert "TrainSpec.init_from_head='keep'" in runs["vit_continued"][1]
    assert arms["vit_continued"] == pytest.approx(arms["vmoe_upcycled"], rel=1e-9)
    assert runner.epochs_for(spec, "vit_continued") > spec.num_epochs  # V-MoE costs more
