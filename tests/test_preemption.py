"""Pre-emption: a run killed at random points (one of them inside a checkpoint save) and
stopped once by SIGTERM ends with the very parameters of an uninterrupted run, and its
TensorBoard curves have every step exactly once."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from harness.config import gin_config
from harness.run_dir.events import read_scalars
from harness.train.preemption import PREEMPTED_EXIT_CODE, Preempted, PreemptionGuard

STEPS = 24
ARGS = [
    "--gin_file=gin/cpu/vit.gin",
    "--gin_param=VitSpec.num_layers=2",
    "--gin_param=TrainSpec.num_epochs=None",
    f"--gin_param=TrainSpec.num_steps={STEPS}",
    "--gin_param=TrainSpec.log_every_steps=2",
    "--gin_param=TrainSpec.checkpoint_every_steps=4",
    "--gin_param=DataSpec.eval_split='test[:500]'",
]


def _launch(workdir) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.run", *ARGS, f"--workdir={workdir}"],
        cwd=gin_config.REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _read_until_step(process: subprocess.Popen, step: int) -> str:
    """Reads progress lines until one for `step` or later (logged steps are even)."""
    seen = ""
    for line in process.stdout:
        seen += line
        if line.startswith("step ") and int(line.split()[1].split("/")[0]) >= step:
            return seen
    raise AssertionError(f"the run ended before step {step}:\n{seen[-3000:]}")


def _finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    return output


def _kill_inside_a_save(process: subprocess.Popen, checkpoints: str) -> str:
    """SIGKILL as soon as orbax's temporary directory of a new checkpoint appears."""
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if os.path.isdir(checkpoints):
            partial = [name for name in os.listdir(checkpoints) if "tmp" in name]
            if partial:
                process.kill()
                process.wait()
                return partial[0]
        time.sleep(0.0005)
    raise AssertionError(f"no checkpoint save was caught in progress:\n{_finish(process)[-3000:]}")


def _final_params(workdir) -> dict:
    restored = ocp.StandardCheckpointer().restore(
        os.path.join(workdir, "checkpoints", str(STEPS), "default")
    )
    return jax.tree_util.tree_map(np.asarray, restored["params"])


@pytest.mark.parametrize(
    "signum, exit_code", [(signal.SIGTERM, PREEMPTED_EXIT_CODE), (signal.SIGINT, 130)]
)
def test_sigterm_and_ctrl_c_ask_for_a_checkpoint_and_a_stop(signum, exit_code):
    previous = signal.getsignal(signum)
    with PreemptionGuard() as guard:
        assert not guard.requested(1)
        os.kill(os.getpid(), signum)  # handled: neither kills the process nor raises
        assert guard.requested(2)
    assert signal.getsignal(signum) is previous
    stopped = Preempted(2, "/w/checkpoints", guard.signal_name)
    assert stopped.exit_code == exit_code
    assert str(stopped).startswith(f"stopped by {signal.Signals(signum).name} after step 2;")


@pytest.mark.slow
def test_killed_and_terminated_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    # The uninterrupted reference runs beside the first interrupted launch (each spends most
    # of its time importing), but is finished before the kill-inside-a-save, whose polling
    # must not compete with it for the CPU.
    uninterrupted = _launch(reference)

    rng = random.Random(20261124)  # kill points vary with the seed; printed on failure
    kill_step = rng.choice(range(3, 10, 2))
    process = _launch(interrupted)
    _read_until_step(process, kill_step)
    time.sleep(rng.uniform(0.0, 0.3))
    process.send_signal(signal.SIGKILL)
    process.wait()
    reference_output = _finish(uninterrupted)
    assert uninterrupted.returncode == 0, reference_output[-3000:]

    checkpoints = str(interrupted / "checkpoints")
    process = _launch(interrupted)
    partial = _kill_inside_a_save(process, checkpoints)
    assert os.path.isdir(os.path.join(checkpoints, partial)), f"kill after step {kill_step}"

    process = _launch(interrupted)
    _read_until_step(process, 18)
    process.send_signal(signal.SIGTERM)
    output = _finish(process)
    assert process.returncode == PREEMPTED_EXIT_CODE, output[-3000:]
    stopped_line = next(line for line in output.splitlines() if "stopped by SIGTERM" in line)
    stopped_at = int(stopped_line.split("after step ")[1].split(";")[0])
    assert os.path.isdir(os.path.join(checkpoints, str(stopped_at)))
    assert not (interrupted / "results.json").exists()

    process = _launch(interrupted)
    output = _finish(process)
    assert process.returncode == 0, output[-3000:]
    assert f"resuming from checkpoint at step {stopped_at}" in output

    expected, actual = _final_params(reference), _final_params(interrupted)
    assert jax.tree_util.tree_structure(expected) == jax.tree_util.tree_structure(actual)
    for want, got in zip(
        jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(actual), strict=True
    ):
        np.testing.assert_array_equal(got, want)

    logged = [1, *range(2, STEPS + 1, 2)]
    for workdir in (reference, interrupted):
        scalars = read_scalars(str(workdir))
        assert [step for step, _ in scalars["train/loss"]] == logged, workdir
        assert [step for step, _ in scalars["eval/top1"]] == [STEPS], workdir
    ours = json.loads((interrupted / "results.json").read_text())
    theirs = json.loads((reference / "results.json").read_text())
    assert ours["train"]["resumed_from_step"] == stopped_at
    # Training time is that of every attempt (each recorded up to its last checkpoint).
    attempts = ours["attempts"]
    assert [a["outcome"] for a in attempts[-2:]] == ["stopped", "finished"]
    assert attempts[-2]["to_step"] == attempts[-1]["from_step"] == stopped_at
    assert ours["train"]["wall_seconds"] == pytest.approx(sum(a["wall_seconds"] for a in attempts))
    assert ours["eval"] == theirs["eval"]
    assert ours["eval"]["eval/num_examples"] == 500
    # The run's identity, as the CLI records it.
    assert ours["run"]["family"] == "vit"
    assert ours["run"]["versions"]["praxis"] == "1.4.0"
    assert ours["run"]["devices"]["count"] == jax.device_count() == 8
    assert ours["model"]["params_total"] == ours["model"]["params_active"] > 0
    assert (interrupted / "config.gin").read_text().count("ModelSpec.family = 'vit'") == 1
    assert "VitSpec.num_layers = 2" in (interrupted / "operative_config.gin").read_text()
