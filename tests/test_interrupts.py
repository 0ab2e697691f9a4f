"""Issue 26: a Ctrl-C outside the training loop stops the command with exit 130 and one line,
with the run resumable: also when a library swallowed the KeyboardInterrupt ("Exception
ignored"), at start-up, while codecarbon starts, during the last step or the final
evaluation."""

import contextlib
import os
import signal
import sys

import gin
import pytest

from harness import interrupts
from harness.cli import app
from harness.measure import energy_tracker
from harness.runtime import checkpointing
from harness.train import launch, preemption
from harness.train import trainer as trainer_lib

SHORT = [
    "VitSpec.num_layers=1",
    "TrainSpec.num_epochs=None",
    "TrainSpec.num_steps=2",
    "DataSpec.eval_split='test[:256]'",
]


@pytest.fixture(autouse=True)
def _restore_sigint():
    previous = signal.getsignal(signal.SIGINT)
    interrupts.reset()
    yield
    signal.signal(signal.SIGINT, previous)
    interrupts.reset()
    gin.clear_config()


def _swallowed_ctrl_c() -> None:
    """A Ctrl-C that a library catches and reports as ignored (a finalizer, a C callback)."""
    with contextlib.suppress(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("swallowed", [False, True])
def test_a_command_interrupted_by_ctrl_c_exits_130_with_one_line(monkeypatch, capsys, swallowed):
    finished = []

    def main(args):
        _swallowed_ctrl_c() if swallowed else os.kill(os.getpid(), signal.SIGINT)
        finished.append(True)

    monkeypatch.setattr(sys, "argv", ["harness.evaluate"])
    with pytest.raises(SystemExit) as stop:
        app.run(main)
    assert stop.value.code == 130
    assert capsys.readouterr().err.strip().splitlines() == ["interrupted (SIGINT)"]
    assert finished == ([True] if swallowed else [])


def _train(workdir) -> None:
    launch.train(["gin/cpu/vit.gin"], SHORT, str(workdir))


def test_a_ctrl_c_swallowed_at_start_up_stops_before_training(tmp_path):
    interrupts.install()
    _swallowed_ctrl_c()
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_ctrl_c_while_codecarbon_starts_is_a_keyboard_interrupt(tmp_path, monkeypatch):
    @contextlib.contextmanager
    def interrupted_start(enabled):
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(energy_tracker, "track_attempt", interrupted_start)
    with pytest.raises(KeyboardInterrupt):  # was UnboundLocalError
        _train(tmp_path / "run")
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.slow
def test_a_ctrl_c_during_the_final_evaluation_leaves_a_resumable_run(tmp_path, monkeypatch):
    interrupts.install()
    workdir = tmp_path / "run"

    def swallowing_write(*args, **kwargs):  # right after the final evaluation pass
        _swallowed_ctrl_c()

    monkeypatch.setattr(trainer_lib, "write_evaluation", swallowing_write)
    with pytest.raises(KeyboardInterrupt):
        _train(workdir)
    assert not (workdir / "results.json").exists()
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2"]
    monkeypatch.undo()
    interrupts.reset()
    gin.clear_config()
    _train(workdir)  # resumes at step 2: evaluates and finishes
    assert (workdir / "results.json").exists()


@pytest.mark.slow
def test_a_signal_during_the_last_step_stops_instead_of_finishing(tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    original = checkpointing.Checkpointer.save

    def save_then_signal(self, step, state):
        original(self, step, state)
        if step == 2:  # the last step: the loop checks for a stop no more after it
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(checkpointing.Checkpointer, "save", save_then_signal)
    with pytest.raises(preemption.Preempted) as stopped:
        _train(workdir)
    assert stopped.value.exit_code == 130 and stopped.value.step == 2
    assert not (workdir / "results.json").exists()
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2"]
