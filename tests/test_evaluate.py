"""`python -m harness.evaluate`: weights from a checkpoint become a run directory that gives
the trained run's own numbers, and a checkpoint that does not fit the model is one line."""

import json
import os
import subprocess
import sys

import gin
import pytest

from harness import project
from harness.errors import UsageError
from harness.measure import routing_sweep
from harness.runtime import restore
from harness.train import evaluate_checkpoint as evaluate
from harness.train import launch

SHORT = [
    "TrainSpec.num_epochs=None",
    "TrainSpec.num_steps=8",
    "DataSpec.eval_split='test[:512]'",
]


@pytest.fixture(scope="module")
def trained_vmoe(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("runs") / "vmoe")
    payload = launch.train(["gin/cpu/vmoe.gin"], SHORT, workdir)
    gin.clear_config()
    return workdir, payload


@pytest.mark.slow
def test_evaluating_a_run_gives_its_own_final_evaluation(trained_vmoe, tmp_path):
    workdir, trained = trained_vmoe
    out = str(tmp_path / "evaluated")
    try:
        payload = evaluate.evaluate_checkpoint(["gin/cpu/vmoe.gin"], SHORT, workdir, out)
    finally:
        gin.clear_config()
    assert payload["eval"]["eval/top1"] == trained["eval"]["eval/top1"]
    assert payload["eval"]["eval/loss"] == pytest.approx(trained["eval"]["eval/loss"], rel=1e-6)
    assert payload["run"]["imported_from"] == {"checkpoint": workdir, "format": "run"}
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["eval"]["eval/top1"] == trained["eval"]["eval/top1"]
    # The written run directory is a run like any other: sweep restores its weights.
    try:
        run = restore.load_trained(out)
        swept = routing_sweep.sweep(run, capacities=[1.05], ks=[2], timing_batch_size=8)
    finally:
        gin.clear_config()
    # gin/cpu/vmoe.gin trains and evaluates with BPR at C=1.05.
    as_trained = next(p for p in swept["points"] if p["routing"] == "bpr")
    assert as_trained["top1"] == pytest.approx(trained["eval"]["eval/top1"])


@pytest.mark.slow
def test_a_checkpoint_of_another_model_is_one_line_and_nothing_written(trained_vmoe, tmp_path):
    workdir, _ = trained_vmoe
    out = tmp_path / "evaluated"
    with pytest.raises(UsageError, match="does not fit") as caught:
        try:
            evaluate.evaluate_checkpoint(["gin/cpu/vit.gin"], SHORT, workdir, str(out))
        finally:
            gin.clear_config()
    assert "\n" not in str(caught.value)
    assert not out.exists()


def test_cli_requires_its_inputs(tmp_path):
    process = subprocess.run(
        [sys.executable, "-m", "harness.evaluate", "--gin_file=gin/cpu/vit.gin"],
        capture_output=True,
        text=True,
        cwd=project.REPO_ROOT,
        timeout=60,
    )
    assert process.returncode == 2
    assert process.stderr.strip() == "error: --checkpoint is required; see --help"
