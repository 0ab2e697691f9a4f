"""The report from real tiny runs made here: its numbers are the runs' numbers, its plots
exist, a bad run directory is skipped, and the TensorBoard files carry the expected tags."""

import json
import os
import re
import shutil

import gin
import pytest
from absl import flags

from harness.cli import report
from harness.errors import UsageError
from harness.measure import routing_sweep
from harness.run_dir import events, run_record
from harness.runtime import restore
from harness.train import launch

SHORT = [
    "TrainSpec.num_epochs=None",
    "TrainSpec.num_steps=12",
    "TrainSpec.log_every_steps=6",
    "DataSpec.eval_split='test[:1000]'",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    dirs = {}
    for family in ("vit", "vmoe", "widenet"):
        dirs[family] = str(root / family)
        launch.train([f"gin/cpu/{family}.gin"], SHORT, dirs[family])
        gin.clear_config()
    trained = restore.load_trained(dirs["vmoe"])
    payload = routing_sweep.sweep(trained, capacities=[1.0, 0.25], ks=[1, 2], timing_batch_size=8)
    with open(os.path.join(dirs["vmoe"], run_record.SWEEP_FILE), "w") as f:
        json.dump(payload, f)
    gin.clear_config()
    return root, dirs


def _results(path: str) -> dict:
    with open(os.path.join(path, "results.json")) as f:
        return json.load(f)


@pytest.mark.slow
def test_tensorboard_files_carry_the_expected_tags(runs):
    _, dirs = runs
    for family, path in dirs.items():
        tags = set(events.read_scalars(path))
        expected = {
            "train/loss",
            "train/cross_entropy",
            "train/learning_rate",
            "train/grad_norm",
            "train/images_per_second",
            "eval/top1",
        }
        assert expected <= tags, family
        if family == "vmoe":
            assert {
                "train/aux/importance_loss",
                "train/aux/load_loss",
                "train/routing/dropped_fraction/block_01",
                "eval/routing/dropped_fraction/block_03",
            } <= tags
            assert set(events.image_tags(path)) == {
                "routing/expert_by_class/block_01",
                "routing/expert_by_class/block_03",
            }
        if family == "widenet":
            assert "train/aux/switch_loss" in tags
            assert {f"train/routing/dropped_fraction/block_0{i}" for i in range(4)} <= tags
        if family != "vit":  # routing health per MoE layer (WideNet: its shared MoE per block)
            blocks = ("01", "03") if family == "vmoe" else ("00", "01", "02", "03")
            for block in blocks:
                assert {
                    f"routing/block_{block}/load/expert_00",
                    f"routing/block_{block}/dead_experts",
                    f"routing/block_{block}/entropy",
                    f"routing/block_{block}/dropped_fraction",
                } <= tags, (family, block)
        else:
            assert not any(tag.startswith("routing/") for tag in tags)


@pytest.mark.slow
def test_sweep_covers_every_point_and_low_capacity_drops_tokens(runs):
    _, dirs = runs
    with open(os.path.join(dirs["vmoe"], "sweep.json")) as f:
        points = json.load(f)["points"]
    assert len(points) == 2 * 2 * 2
    by_key = {(p["routing"], p["k"], p["capacity_factor"]): p for p in points}
    for routing in ("vanilla", "bpr"):
        assert (
            by_key[(routing, 2, 0.25)]["dropped_fraction"]
            > by_key[(routing, 2, 1.0)]["dropped_fraction"]
        )
        assert (
            by_key[(routing, 1, 1.0)]["gflops_per_image"]
            < by_key[(routing, 2, 1.0)]["gflops_per_image"]
        )


@pytest.mark.slow
def test_report_numbers_equal_the_runs_and_plots_exist(runs, tmp_path, capsys):
    root, dirs = runs
    broken = root / "broken"
    broken.mkdir(exist_ok=True)
    (broken / "results.json").write_text("{not json")
    unfinished = root / "unfinished"  # killed before it wrote results.json
    (unfinished / "checkpoints").mkdir(parents=True, exist_ok=True)
    output = tmp_path / "compare.md"
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["report", f"-o={output}", "--batch_sizes=4,8", "--timing_repeats=3"])
    report.main([dirs["vit"], dirs["vmoe"], dirs["widenet"], str(broken), str(unfinished)])
    warnings = capsys.readouterr().err
    assert f"skipping {broken}: results.json is corrupt" in warnings
    assert f"skipping {unfinished}: no results.json" in warnings
    markdown = output.read_text()
    comparison = markdown.split("## Results", 1)[1].split("How each column", 1)[0]
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
        for line in comparison.splitlines()
        if re.match(r"^\| (vit|vmoe|widenet) \|", line)
    }
    assert set(rows) == {"vit", "vmoe", "widenet"}
    for family, path in dirs.items():
        cells, results = rows[family], _results(path)
        assert cells[1] == results["run"]["family"]
        assert cells[2] == f"{results['model']['params_total']:,}"
        assert cells[3] == f"{results['model']['params_active']:,}"
        assert cells[4] == f"{results['model']['gflops_per_image']:.4f}"
        assert cells[5] == f"{results['eval']['eval/top1']:.4f}"
        assert cells[6] != "n/a"  # timed in the report process
        assert cells[9] != "" and float(cells[9]) > 0  # kWh
    assert "broken" not in rows
    plots_dir = tmp_path / "compare_plots"
    for name in (
        "accuracy_vs_gflops.png",
        "training_curves.png",
        "vmoe_capacity.png",
        "vmoe_block_01_experts.png",
        "vmoe_block_03_experts.png",
        "widenet_block_00_experts.png",
        "widenet_block_03_experts.png",
    ):
        assert (plots_dir / name).stat().st_size > 1000, name
        assert f"compare_plots/{name}" in markdown
    for family in ("vmoe", "widenet"):
        assert f"### {family}: routing health per MoE layer" in markdown
        assert f"compare_plots/{family}_routing_health.png" in markdown
        health = _results(dirs[family])["routing_health"]["layers"]
        for block, layer in health.items():
            experts, top = len(layer["load"]), max(layer["load"])
            assert f"| {block} | {experts} | {top:.3f} | {len(layer['dead_experts'])}" in markdown
    assert "routing_health" not in _results(dirs["vit"])
    assert "python -m harness.run --gin_file=gin/cpu/vmoe.gin" in markdown
    assert "measured time x table power" in markdown


def test_report_with_no_readable_run_is_a_usage_error(tmp_path):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["report", f"-o={tmp_path / 'r.md'}", "--notiming"])
    with pytest.raises(UsageError, match="nothing to report"):
        report.main([str(tmp_path / "missing")])
    assert not (tmp_path / "r.md").exists()
    shutil.rmtree(tmp_path, ignore_errors=True)
