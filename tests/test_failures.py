"""Runs that fail keep what they had: a diverged run stops with its last good checkpoint, and
a damaged checkpoint is named along with the way to resume from an earlier one."""

import os
import shutil
import subprocess
import sys

import gin
import pytest

from harness.config import gin_config
from harness.errors import UsageError
from harness.runtime.checkpointing import CHECKPOINT_DIR
from harness.train import launch

TINY = [
    "VitSpec.num_layers=1",
    "TrainSpec.num_epochs=None",
    "TrainSpec.log_every_steps=1",
    "DataSpec.eval_split='test[:200]'",
]


@pytest.fixture(autouse=True)
def _clear_gin():
    yield
    gin.clear_config()


def _steps(workdir) -> list[int]:
    return sorted(int(name) for name in os.listdir(workdir / CHECKPOINT_DIR) if name.isdigit())


@pytest.mark.slow
def test_diverging_run_stops_non_zero_and_keeps_its_last_good_checkpoint(tmp_path):
    workdir = tmp_path / "run"
    bindings = [
        *TINY,
        "TrainSpec.num_steps=8",
        "TrainSpec.checkpoint_every_steps=1",
        "OptimizerSpec.learning_rate=1e30",  # params overflow within a step or two
        "OptimizerSpec.warmup_steps=1",
    ]
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.run",
            "--gin_file=gin/cpu/vit.gin",
            *[f"--gin_param={b}" for b in bindings],
            f"--workdir={workdir}",
        ],
        cwd=gin_config.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 1, process.stderr[-3000:]
    error = process.stderr.strip().splitlines()[-1]
    assert error.startswith("error: loss became"), error
    good = _steps(workdir)
    assert good, "the steps before the divergence were checkpointed"
    diverged_at = int(error.split(" at step ")[1].split(";")[0])
    assert good[-1] == diverged_at - 1
    assert f"the last good checkpoint is step {good[-1]}" in error
    assert not (workdir / "results.json").exists()


@pytest.mark.slow  # two tiny trainings: ~60 s on 2 busy cores
def test_truncated_checkpoint_is_named_with_the_way_back(tmp_path):
    workdir = tmp_path / "run"
    bindings = [*TINY, "TrainSpec.checkpoint_every_steps=2", "TrainSpec.keep_checkpoints=3"]
    launch.train(["gin/cpu/vit.gin"], [*bindings, "TrainSpec.num_steps=4"], str(workdir))
    assert _steps(workdir) == [2, 4]
    for folder, _, files in os.walk(workdir / CHECKPOINT_DIR / "4"):
        for name in files:
            path = os.path.join(folder, name)
            os.truncate(path, os.path.getsize(path) // 2)

    longer = [*bindings, "TrainSpec.num_steps=6"]
    with pytest.raises(UsageError) as error:
        launch.train(["gin/cpu/vit.gin"], longer, str(workdir))
    message = str(error.value)
    assert f"checkpoint {workdir / CHECKPOINT_DIR / '4'} cannot be restored" in message
    assert "to resume from step 2" in message
    assert "\n" not in message

    # The hint works: set the damaged step aside and the run resumes from the one before.
    shutil.move(workdir / CHECKPOINT_DIR / "4", workdir / CHECKPOINT_DIR / "4.bad")
    outcome = launch.train(["gin/cpu/vit.gin"], longer, str(workdir))
    assert outcome["train"]["resumed_from_step"] == 2
    assert (workdir / CHECKPOINT_DIR / "4.bad").is_dir()  # the user's files stay theirs
