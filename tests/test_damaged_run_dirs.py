"""Issue 26: a run directory someone shares is data that may be damaged or hostile. Reading
it reads only regular files within size limits, verifies the weights against what training
recorded (checksums, the checkpoint's own shapes), and every problem is one line: a
UsageError for commands that need the run, a warning and a skipped run for the report."""

import json
import os
import shutil
from pathlib import Path

import gin
import pytest

from harness.checkpoint_formats import orbax_run
from harness.config import experiment_file
from harness.errors import UsageError
from harness.reporting import runs
from harness.run_dir import bounded
from harness.runtime import restore
from tests import run_dir_fixtures


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return run_dir_fixtures.train_tiny_vit(str(tmp_path_factory.mktemp("runs") / "vit"))


@pytest.fixture
def run_copy(trained, tmp_path):
    copy = str(tmp_path / "run")
    shutil.copytree(trained, copy)
    return copy


def _array_file(run_dir: str) -> str:
    """The largest file of the latest checkpoint: orbax's array data."""
    step = os.path.join(run_dir, "checkpoints", "2")
    found = [os.path.join(f, n) for f, _, names in os.walk(step) for n in names]
    return max(found, key=os.path.getsize)


@pytest.mark.slow
def test_importing_a_run_verifies_the_checksums_training_wrote(run_copy):
    path = _array_file(run_copy)
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    with pytest.raises(UsageError, match="does not match its checksum") as caught:
        orbax_run.read_params(run_copy)
    assert "\n" not in str(caught.value)


@pytest.mark.slow
@pytest.mark.parametrize("field", ["mlp_dims", "model_dims"])
def test_an_edited_experiment_json_shape_is_refused_not_truncated(run_copy, field):
    path = os.path.join(run_copy, experiment_file.EXPERIMENT_FILE)
    data = json.loads(Path(path).read_text())
    data["model"]["vit"][field] //= 2
    with open(path, "w") as f:
        json.dump(data, f)
    try:
        with pytest.raises(UsageError, match="weight shapes differ") as caught:
            restore.load_trained(run_copy)
    finally:
        gin.clear_config()
    assert "\n" not in str(caught.value)


# --- Bounded reads: what a planted file does to the readers. ---


def _plant(path: str, kind: str) -> None:
    if os.path.lexists(path):
        os.remove(path)
    if kind == "symlink to /dev/zero":
        os.symlink("/dev/zero", path)
    elif kind == "FIFO":
        os.mkfifo(path)
    elif kind == "deep JSON":
        with open(path, "w") as f:
            f.write("[" * 100_000 + "]" * 100_000)
    elif kind == "oversized":
        with open(path, "w") as f:
            f.write(" " * (bounded.limit_for(path) + 1) + "{}")


KINDS = ["symlink to /dev/zero", "FIFO", "deep JSON", "oversized"]
EXPECTED = {
    "symlink to /dev/zero": "not a regular file",
    "FIFO": "not a regular file",
    "deep JSON": "nested too deeply",
    "oversized": "over the",
}


def _minimal_run(directory) -> str:
    return run_dir_fixtures.minimal_run(directory)


@pytest.mark.parametrize("kind", KINDS)
def test_the_report_skips_a_planted_results_json_with_one_warning(tmp_path, capsys, kind):
    run_dir = _minimal_run(tmp_path / "run")
    _plant(os.path.join(run_dir, "results.json"), kind)
    assert runs.load_run(run_dir) is None
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 1 and EXPECTED[kind] in warnings[0], warnings


@pytest.mark.parametrize("kind", KINDS)
def test_the_report_ignores_a_planted_sweep_json_with_one_warning(tmp_path, capsys, kind):
    run_dir = _minimal_run(tmp_path / "run")
    _plant(os.path.join(run_dir, "sweep.json"), kind)
    run = runs.load_run(run_dir)
    assert run is not None and run.sweep is None
    warnings = [w for w in capsys.readouterr().err.splitlines() if "sweep.json" in w]
    assert len(warnings) == 1 and EXPECTED[kind] in warnings[0], warnings


@pytest.mark.parametrize("kind", KINDS)
def test_the_report_ignores_a_planted_fewshot_json_with_one_warning(tmp_path, capsys, kind):
    from harness.reporting import transfer_data

    run_dir = _minimal_run(tmp_path / "run")
    _plant(os.path.join(run_dir, "fewshot.json"), kind)
    run = runs.load_run(run_dir)
    capsys.readouterr()
    assert transfer_data.read_fewshot(run, "cmd") is None
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 1 and EXPECTED[kind] in warnings[0], warnings


@pytest.mark.parametrize("kind", KINDS)
def test_a_planted_experiment_json_is_one_line(tmp_path, kind):
    run_dir = _minimal_run(tmp_path / "run")
    _plant(os.path.join(run_dir, experiment_file.EXPERIMENT_FILE), kind)
    if kind in ("symlink to /dev/zero", "FIFO"):
        expected = "has no experiment.json"  # not a regular file: as good as absent
    else:
        expected = EXPECTED[kind]
    with pytest.raises(UsageError, match=expected) as caught:
        experiment_file.load_experiment(run_dir)
    assert "\n" not in str(caught.value)


# --- Report injection: nothing from a run directory becomes markup. ---

HOSTILE = "<script>alert(1)</script> [link](http://x) *bold*"


def _outside_code_blocks(markdown: str) -> list[str]:
    """The lines of `markdown` outside fenced code blocks (CommonMark: a fence closes on a
    line of at least as many backticks)."""
    outside, fence = [], None
    for line in markdown.splitlines():
        ticks = len(line) - len(line.lstrip("`"))
        if fence is None and ticks >= 3:
            fence = ticks
        elif fence is not None and ticks >= fence and not line.strip("`"):
            fence = None
        elif fence is None:
            outside.append(line)
    assert fence is None, "a code block is left open"
    return outside


@pytest.mark.slow
def test_no_value_from_a_planted_run_directory_adds_markup_to_the_report(run_copy, tmp_path):
    from harness.reporting import report

    path = os.path.join(run_copy, "results.json")
    results = json.loads(Path(path).read_text())
    results["run"]["family"] = HOSTILE
    results["run"]["gin_params"] = ["VitSpec.x=1\n```\n# Owned\n<script>bad()</script>"]
    results["run"]["versions"] = {"jax": "\n# Owned too <img src=x onerror=y>"}
    results["run"]["devices"]["kind"] = "`code` " + HOSTILE
    Path(path).write_text(json.dumps(results))
    run = runs.load_run(run_copy)
    text = report.render([run], {}, str(tmp_path / "r.md"), "python -m harness.report x")
    outside = _outside_code_blocks(text)
    assert not [line for line in outside if "<script" in line or "<img" in line]
    assert not [line for line in outside if line.startswith("# Owned")]
    assert not [line for line in outside if "](http://x)" in line and "\\]" not in line]
    headings = [line for line in outside if line.startswith("#")]
    assert all(h.startswith(("# Comparison", "## ", "### ")) for h in headings), headings
