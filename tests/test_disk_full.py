"""Issue 26: a full disk outside checkpoint saves (config, results.json, sweep.json,
fewshot.json, the report and its PNGs) is one line naming the file, exit 1, the previous file
kept, and a training attempt's energy record kept in attempts.json."""

import errno
import json
import os
import sys

import gin
import pytest

from harness import files
from harness.cli import app
from harness.errors import WriteFailed
from harness.reporting import report
from harness.train import launch
from tests import run_dir_fixtures

SHORT = [
    "VitSpec.num_layers=1",
    "TrainSpec.num_epochs=None",
    "TrainSpec.num_steps=2",
    "DataSpec.eval_split='test[:256]'",
]


@pytest.fixture
def disk_full_for(monkeypatch):
    """disk_full_for(*names): renaming a written file onto any of `names` fails with ENOSPC,
    as the file system reports a full disk (the temporary file holds the new text)."""
    replace = os.replace

    def arm(*names: str) -> None:
        def full(source, destination, *args, **kwargs):
            if os.path.basename(destination) in names or "*" in names:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return replace(source, destination, *args, **kwargs)

        monkeypatch.setattr(files.os, "replace", full)

    return arm


def _one_line(caught: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(caught.value)
    assert "\n" not in message and all(p in message for p in parts), message


@pytest.mark.parametrize("name", ["results.json", "sweep.json", "fewshot.json"])
def test_a_full_disk_keeps_the_previous_json_file(tmp_path, disk_full_for, name):
    path = tmp_path / name
    path.write_text('{"good": true}')
    disk_full_for(name)
    with pytest.raises(WriteFailed) as caught:
        files.write_json_atomically(str(path), {"good": False})
    _one_line(caught, str(path), "No space left on device", "previous file is kept")
    assert json.loads(path.read_text()) == {"good": True}
    assert os.listdir(tmp_path) == [name]  # no temporary file left behind


def test_a_write_error_inside_the_block_is_one_line_too(tmp_path):
    path = tmp_path / "new.json"
    with pytest.raises(WriteFailed) as caught, files.replacing(str(path)):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
    _one_line(caught, str(path), "nothing was written")
    assert os.listdir(tmp_path) == []


def test_other_errors_are_not_taken_for_a_full_disk(tmp_path):
    with pytest.raises(FileNotFoundError), files.replacing(str(tmp_path / "x")):
        raise FileNotFoundError(errno.ENOENT, "missing input")


def test_a_full_disk_while_writing_report_plots_keeps_the_previous_report(tmp_path, disk_full_for):
    run = run_dir_fixtures.minimal_run(tmp_path / "run")
    output = tmp_path / "r.md"
    output.write_text("previous report")
    disk_full_for("accuracy_vs_gflops.png")
    with pytest.raises(WriteFailed) as caught:
        report.write_report([run], str(output), "python -m harness.report run -o r.md", [], 1)
    _one_line(caught, "accuracy_vs_gflops.png")
    assert output.read_text() == "previous report"


def test_commands_exit_1_with_one_line_on_a_failed_write(monkeypatch, capsys):
    def main(args):
        raise WriteFailed("x.json could not be written (No space left on device)")

    monkeypatch.setattr(sys, "argv", ["harness.sweep"])
    with pytest.raises(SystemExit) as stop:
        app.run(main)
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: x.json could not be written (No space left on device)"]


def test_a_full_disk_for_the_config_stops_before_training(tmp_path, disk_full_for):
    workdir = tmp_path / "run"
    disk_full_for("config.gin")
    try:
        with pytest.raises(WriteFailed) as caught:
            launch.train(["gin/cpu/vit.gin"], SHORT, str(workdir))
    finally:
        gin.clear_config()
    _one_line(caught, "config.gin")
    assert not (workdir / "checkpoints").exists() and not (workdir / "attempts.json").exists()


@pytest.mark.slow
def test_a_full_disk_for_results_keeps_the_attempts_energy(tmp_path, disk_full_for):
    workdir = tmp_path / "run"
    disk_full_for("results.json")
    try:
        with pytest.raises(WriteFailed) as caught:
            launch.train(["gin/cpu/vit.gin"], SHORT, str(workdir))
    finally:
        gin.clear_config()
    _one_line(caught, "results.json")
    assert not (workdir / "results.json").exists()
    attempts = json.loads((workdir / "attempts.json").read_text())["attempts"]
    assert len(attempts) == 1 and "energy" in attempts[0]
    assert attempts[0]["to_step"] == 2
