"""README's shell commands, run as a new user pastes them (issue 25), so the README cannot
drift from the code again.

Every command in README's ```sh blocks is either run, in README order, in one temporary
directory with its relative paths as written (runs/vit, reports/compare.md, ...) and tiny
overrides appended so it takes seconds, or skipped for a stated reason (it needs a bucket, a
prepared ImageNet, or hours). A README command that fits neither fails the test, so a new one
has to be placed.
"""

import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON_PREFIX = ".venv/bin/python -m harness."

# Appended to each command (absl and gin: the last value given wins).
TINY = {
    "run": [
        "--gin_param=TrainSpec.num_epochs=None",
        "--gin_param=TrainSpec.num_steps=2",
        "--gin_param=VitSpec.num_layers=2",
        "--gin_param=DataSpec.eval_split='test[:64]'",
    ],
    "evaluate": [
        "--gin_param=VitSpec.num_layers=2",
        "--gin_param=DataSpec.eval_split='test[:64]'",
    ],
    "sweep": ["--capacities=1", "--ks=1", "--timing_batch_size=8"],
    "report": ["--batch_sizes=1", "--timing_repeats=2"],
    "fewshot": ["--shots=1", "--seeds=1"],
    "inspect": ["--noxla_flops"],
}


def readme_commands() -> list[str]:
    """The commands of README's sh blocks, continuation lines joined, comments dropped."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                commands.append(" ".join(line.split()))
    return commands


def classified() -> list[tuple[str, str | None]]:
    """README's commands, each with why it is not run here (None: it runs). A command that
    reads a run directory which a skipped command would have made is skipped too."""
    skipped_workdirs: list[str] = []
    found = []
    for command in readme_commands():
        reason = skip_reason(command)
        reads = [
            w for w in skipped_workdirs if re.search(rf"(^|[\s=]){re.escape(w)}(\s|$)", command)
        ]
        if reason is None and reads:
            reason = f"reads {reads[0]}, which a skipped command creates"
        if reason is not None:
            skipped_workdirs += re.findall(r"--workdir=(\S+)", command)
        found.append((command, reason))
    return found


def skip_reason(command: str) -> str | None:
    """Why a README command is not run here, or None to run it."""
    if command.startswith(("make ", "bash ")):
        return "a make target or script: CI runs make test itself"
    if not command.startswith(PYTHON_PREFIX):
        return "not a harness command (TensorBoard)"
    if "gs://" in command:
        return "reads a bucket; no network here"
    if "/data/tfds" in command:
        return "needs a prepared ImageNet or CIFAR"
    name = command[len(PYTHON_PREFIX) :].split()[0]
    if name == "suite":
        return "trains the whole suite (tests/test_suite_*.py run it at tiny scale)"
    if name == "inspect" and "--batch" in command:
        return "compiles a paper-size step (minutes)"
    gin_files = re.findall(r"--gin_file=(\S+)", command)
    paper_size = any(not f.startswith("gin/cpu/") and "/data/" not in f for f in gin_files)
    if name in ("run", "evaluate") and paper_size and "VitSpec.model_dims" not in command:
        return "a paper-size model"
    return None


def test_every_readme_command_is_run_or_skipped_for_a_reason():
    commands = classified()
    assert len(commands) >= 15
    run = [c for c, reason in commands if reason is None]
    # The core of README's use section runs: training, sweep, report, inspect, few-shot,
    # evaluation of a run directory, fine-tuning from one.
    for name in ("run", "sweep", "report", "inspect", "fewshot", "evaluate"):
        assert any(c.startswith(PYTHON_PREFIX + name + " ") for c in run), name
    assert any("TrainSpec.init_from='runs/vit'" in c for c in run)


@pytest.mark.slow  # about a dozen commands, each loading the stack in its own process
def test_readme_commands_work_as_written(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT}
    for command, reason in classified():
        if reason is not None:
            continue
        name = command[len(PYTHON_PREFIX) :].split()[0]
        args = shlex.split(command)[3:]  # after `.venv/bin/python -m harness.NAME`
        process = subprocess.run(
            [sys.executable, "-m", f"harness.{name}", *args, *TINY.get(name, [])],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=600,
        )
        assert process.returncode == 0, f"{command}\n{process.stderr[-3000:]}"
    # What the README says these commands write, where it says they write it.
    for path in (
        "runs/vmoe/results.json",
        "runs/vmoe/sweep.json",
        "runs/vmoe/fewshot.json",
        "reports/compare.md",
        "runs/vmoe_evaluated/results.json",
        "runs/vit_ft35/init_from.json",
        "runs/vmoe_upcycled/init_from.json",
    ):
        assert (tmp_path / path).is_file(), path
