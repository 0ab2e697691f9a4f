"""Issue 26's table: one tiny trained run, copied and broken one way per row, read by every
command that reads a run directory (report, sweep, fewshot, evaluate --checkpoint, init_from).
Each must say what is wrong in one line (a UsageError, or for the report a warning and a
report without that run's part) and write nothing into the run directory.

Rows that a command does not read are left out, each for a reason: only the report reads
results.json; evaluate imports the weights alone (checksums and the checkpoint's own shapes)
into the user's gin model, so it reads neither experiment.json nor config.gin; init_from
reads experiment.json for the record of what it started from, but imports the weights by the
checkpoint's own shapes; neither reads the run's data (the user's gin names it)."""

import json
import os
import shutil
from pathlib import Path

import gin
import pytest
from absl import flags

from harness.cli import fewshot as fewshot_cli
from harness.cli import sweep as sweep_cli
from harness.config import experiment_file
from harness.errors import UsageError
from harness.reporting import report
from harness.runtime import init_from
from harness.train import evaluate_checkpoint as evaluate
from tests import run_dir_fixtures
from tests.test_finetune import _abstract_params


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return run_dir_fixtures.train_tiny_vit(str(tmp_path_factory.mktemp("runs") / "vit"))


def _edit_experiment(run_dir: str, edit) -> None:
    path = Path(run_dir, experiment_file.EXPERIMENT_FILE)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _halve_mlp_dims(data: dict) -> None:
    data["model"]["vit"]["mlp_dims"] //= 2


def _step_dir(run_dir: str) -> str:
    return os.path.join(run_dir, "checkpoints", "2")


def _flip_a_byte(run_dir: str) -> None:
    found = [os.path.join(f, n) for f, _, ns in os.walk(_step_dir(run_dir)) for n in ns]
    path = max(found, key=os.path.getsize)
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def _replace(path: str, kind: str) -> None:
    os.remove(path)
    if kind == "zero":
        os.symlink("/dev/zero", path)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        Path(path).write_text(kind)


WEIGHTS = ("sweep", "fewshot", "report", "evaluate", "init_from")
# evaluate imports the weights alone into the user's gin model, so it never reads them.
EXPERIMENT = ("sweep", "fewshot", "report", "init_from")
# The commands that rebuild the model (and read the data) from experiment.json; evaluate and
# init_from import the weights by the checkpoint's own shapes into the user's model.
REBUILT = ("sweep", "fewshot", "report")
# name: (how the run is broken, what the one line names, the commands that read it)
KINDS = {
    "results.json to /dev/zero": (
        lambda d: _replace(os.path.join(d, "results.json"), "zero"),
        "not a regular file",
        ("report",),
    ),
    "results.json a FIFO": (
        lambda d: _replace(os.path.join(d, "results.json"), "fifo"),
        "not a regular file",
        ("report",),
    ),
    "results.json without train": (
        lambda d: _replace(os.path.join(d, "results.json"), '{"run": {}, "eval": {}}'),
        "has no run.family",
        ("report",),
    ),
    "experiment.json nested 100k deep": (
        lambda d: _replace(os.path.join(d, "experiment.json"), "[" * 100_000 + "]" * 100_000),
        "nested too deeply",
        EXPERIMENT,
    ),
    "experiment.json a FIFO": (
        lambda d: _replace(os.path.join(d, "experiment.json"), "fifo"),
        "experiment.json",
        EXPERIMENT,
    ),
    "experiment.json mlp_dims halved": (
        lambda d: _edit_experiment(d, _halve_mlp_dims),
        "shape",
        REBUILT,
    ),
    "no experiment.json": (
        lambda d: os.remove(os.path.join(d, "experiment.json")),
        "has no experiment.json",
        EXPERIMENT,
    ),
    "config.gin imports code": (
        lambda d: Path(d, "config.gin").write_text("import os\n"),
        "imports Python code",
        EXPERIMENT,
    ),
    "flipped checkpoint byte": (_flip_a_byte, "checksum", WEIGHTS),
    "checksums file a list": (
        lambda d: Path(_step_dir(d), "checksums.sha256.json").write_text("[]"),
        "checksums",
        WEIGHTS,
    ),
    "no checkpoint": (
        lambda d: shutil.rmtree(_step_dir(d)),
        "checkpoint",
        WEIGHTS,
    ),
    "data_dir of its own": (
        lambda d: _edit_experiment(d, lambda x: x["data"].update(data_dir=d + "/elsewhere")),
        "DataSpec.data_dir=",
        REBUILT,
    ),
    "remote dataset": (
        lambda d: _edit_experiment(d, lambda x: x["data"].update(dataset="kubric:movi_a")),
        "community dataset",
        REBUILT,
    ),
}
CASES = [(kind, command) for kind, (_, _, commands) in KINDS.items() for command in commands]


def _files(run_dir: str) -> dict[str, int]:
    found = {}
    for folder, _, names in os.walk(run_dir):
        for name in names:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, run_dir)] = os.lstat(path).st_mtime_ns
    return found


def _cli(main, name: str, run_dir: str) -> None:
    flags.FLAGS.unparse_flags()
    flags.FLAGS([name])
    main([run_dir])


def _read(command: str, run_dir: str, trained_run: str, tmp_path) -> list[str]:
    """Runs `command` on `run_dir`; returns its one-line error (or the report's warnings)."""
    if command == "report":
        output = str(tmp_path / "out" / "r.md")
        try:
            report.write_report([run_dir], output, "python -m harness.report run -o r.md", [1], 1)
        except UsageError as error:  # the one run skipped: nothing left to report
            assert "nothing to report" in str(error)
        return []
    with pytest.raises(UsageError) as caught:
        if command == "sweep":
            _cli(sweep_cli.main, "sweep", run_dir)
        elif command == "fewshot":
            _cli(fewshot_cli.main, "fewshot", run_dir)
        elif command == "evaluate":
            workdir = str(tmp_path / "eval")
            evaluate.evaluate_checkpoint(
                ["gin/cpu/vit.gin"], list(run_dir_fixtures.TINY_VIT_BINDINGS), run_dir, workdir
            )
        else:
            vit = experiment_file.load_experiment(trained_run).model.vit
            init_from.load_pretrained(run_dir, _abstract_params(vit), model="tiny")
    return [str(caught.value)]


@pytest.mark.slow  # ~40 cases through JAX start-up: about a minute on 2 busy cores
@pytest.mark.parametrize("kind, command", CASES, ids=[f"{c}: {k}" for k, c in CASES])
def test_a_broken_run_directory_is_one_line_for_every_reader(
    trained, tmp_path, capsys, kind, command
):
    run_dir = str(tmp_path / "run")
    shutil.copytree(trained, run_dir, symlinks=True)
    break_it, named, _ = KINDS[kind]
    break_it(run_dir)
    before = _files(run_dir)
    capsys.readouterr()
    try:
        errors = _read(command, run_dir, trained, tmp_path)
    finally:
        gin.clear_config()
        flags.FLAGS.unparse_flags()
    if command == "report":
        # The harness's own lines (libraries such as orbax may log to stderr as well).
        err = capsys.readouterr().err.splitlines()
        errors = [line for line in err if line.startswith(("warning: ", "error: "))]
        assert len(errors) == 1 and errors[0].startswith("warning: "), errors
    assert "\n" not in errors[0] and named in errors[0], errors
    assert _files(run_dir) == before  # nothing written into the run directory
