"""`python -m harness.suite`: trains every (run, seed), records a diverged run instead of
stopping, sweeps the sparse runs, writes the claim-by-claim report, and resumes."""

import json
import os

import gin
import pytest
from absl import flags

from harness.cli import suite
from harness.config.suite_spec import SuiteSpec


def _suite_gin(tmp_path) -> str:
    path = tmp_path / "suite.gin"
    path.write_text(
        f"""
SuiteSpec.root = '{tmp_path / "runs"}'
SuiteSpec.report = '{tmp_path / "claims.md"}'
SuiteSpec.seeds = 1
SuiteSpec.num_epochs = 0.02
SuiteSpec.eval_split = 'test[:500]'
SuiteSpec.sweep_capacities = [1.0, 0.25]
SuiteSpec.sweep_ks = [1, 2]
SuiteSpec.sweep_timing_batch_size = 8
SuiteSpec.paper_configs = ['vit_b16']
SuiteSpec.step_time_runs = ['vit', 'not_a_run']
SuiteSpec.step_time_rounds = 2
SuiteSpec.step_time_steps = 2
SuiteSpec.compute_matched = [('vit_continued', 'vmoe_upcycled')]
SuiteSpec.runs = [
    ('vit', 'gin/cpu/vit.gin', ['VitSpec.num_layers=2']),
    ('vmoe', 'gin/cpu/vmoe.gin', ['VitSpec.num_layers=2']),
    ('vmoe_upcycled', 'gin/cpu/vmoe.gin',
     ['VitSpec.num_layers=2', "TrainSpec.init_from='{{root}}/vit/seed_{{seed}}'"]),
    ('vit_continued', 'gin/cpu/vit.gin',
     ['VitSpec.num_layers=2', "TrainSpec.init_from='{{root}}/vit/seed_{{seed}}'",
      "TrainSpec.init_from_head='keep'"]),
    ('vit22b_high_lr_no_qknorm', 'gin/cpu/vit22b.gin',
     ['VitSpec.num_layers=1', 'OptimizerSpec.learning_rate=1e30',
      'OptimizerSpec.warmup_steps=1', 'TrainSpec.log_every_steps=1']),
]
"""
    )
    return str(path)


def _run_suite(gin_file: str) -> None:
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["suite", f"--gin_file={gin_file}"])
    try:
        suite.main([])
    finally:
        gin.clear_config()


@pytest.mark.slow
def test_suite_trains_sweeps_reports_and_resumes(tmp_path, capsys):
    gin_file = _suite_gin(tmp_path)
    _run_suite(gin_file)
    runs = tmp_path / "runs"
    vit = json.loads((runs / "vit/seed_0/results.json").read_text())
    assert vit["run"]["gin_params"][-2:] == [
        "TrainSpec.num_epochs=0.02",
        "DataSpec.eval_split='test[:500]'",
    ]
    sweep = json.loads((runs / "vmoe/seed_0/sweep.json").read_text())
    assert not (runs / "vit/seed_0/sweep.json").exists()
    # Every point records how the 500 test images' processed fractions spread. (The padding
    # of the last eval batch is routed too, so the mean is not exactly 1 - dropped.)
    for point in sweep["points"]:
        per_image = point["per_image_processed"]
        assert sum(per_image["histogram"]) == 500
        assert 0 < per_image["mean"] <= 1 and per_image["std"] >= 0
    assert (runs / "vit22b_high_lr_no_qknorm/seed_0/diverged.json").exists()

    report = (tmp_path / "claims.md").read_text()
    for heading in (
        "## 1. Sparse",
        "## 2. Batch Prioritized",
        "## 3. Adaptive",
        "## 4. WideNet",
        "## 5. ViT-22B",
        "## 6. Soft MoE",
        "## Routing at evaluation",
        "## 7. Paper scale",
        "## 8. Upcycled V-MoE",
    ):
        assert heading in report
    assert f"| vit | {vit['model']['gflops_per_image']:.4f} |" in report
    assert f"{vit['eval']['eval/top1']:.4f} ± 0.0000" in report
    assert "| vit22b_high_lr_no_qknorm | n/a | n/a | n/a | n/a | n/a | 1/1 |" in report
    # Only listed runs that exist are timed, every round's steps each.
    step_times = json.loads((runs / "step_times.json").read_text())["times"]
    assert list(step_times) == ["vit"]
    assert step_times["vit"]["timed_steps"] == 4
    assert step_times["vit"]["images_per_s"] == pytest.approx(
        step_times["vit"]["batch_size"] / (step_times["vit"]["step_ms"] / 1000)
    )
    assert "| vit_b16 | 86,567,656 | 86,000,000 |" in report
    plots = (
        "accuracy_vs_gflops.png",
        "bpr_vs_vanilla.png",
        "k1_vs_k2.png",
        "per_image_compute.png",
        "upcycling_loss.png",
    )
    for plot in plots:
        assert os.path.getsize(tmp_path / "claims_plots" / plot) > 1000
    capsys.readouterr()

    # Run again: everything is done, nothing retrains, the report is rewritten.
    before = os.path.getmtime(runs / "vit/seed_0/results.json")
    _run_suite(gin_file)
    output = capsys.readouterr().out
    assert output.count("done before, skipped") == 5
    assert os.path.getmtime(runs / "vit/seed_0/results.json") == before


@pytest.mark.parametrize(("rounds", "steps"), [(0, 10), (5, 0)])
def test_step_timing_needs_at_least_one_round_and_step(rounds, steps):
    with pytest.raises(ValueError, match="step_time_rounds"):
        SuiteSpec(
            runs=[("vit", "gin/cpu/vit.gin", [])],
            step_time_rounds=rounds,
            step_time_steps=steps,
        )
