"""Bad input to `python -m harness.run`: one line naming the value and the fix, exit code 2,
and nothing written to the workdir. Cases run in-process (one subprocess checks the exit code
and stderr end to end)."""

import os
import re
import subprocess
import sys
from types import SimpleNamespace

import gin
import pytest
from absl import flags

from harness.cli import app, run, sweep
from harness.cli import report as report_cli
from harness.config import gin_config
from harness.config.experiment import Experiment
from harness.errors import UsageError
from harness.measure import routing_sweep
from harness.runtime import restore

VIT = "--gin_file=gin/cpu/vit.gin"
VMOE = "--gin_file=gin/cpu/vmoe.gin"


def _param(binding: str) -> str:
    return f"--gin_param={binding}"


# (case, arguments, text the one-line message must contain). The workdir is added by the test.
CASES = [
    ("unknown binding", [VIT, _param("VitSpec.widht=3")], "widht"),
    ("misspelt configurable", [VIT, _param("VitSpek.model_dims=3")], "VitSpek"),
    ("gin syntax error", [VIT, _param("VitSpec.model_dims=")], "VitSpec.model_dims"),
    ("wrong value type", [VIT, _param("VitSpec.model_dims='wide'")], "VitSpec.model_dims='wide'"),
    ("k > E", [VMOE, _param("MoeSpec.num_selected_experts=9")], "k=9"),
    ("k < 1", [VMOE, _param("MoeSpec.num_selected_experts=0")], "k=0"),
    ("C <= 0", [VMOE, _param("MoeSpec.capacity_factor=0.0")], "C=0.0"),
    ("eval C <= 0", [VMOE, _param("MoeSpec.eval_capacity_factor=-1.0")], "=-1.0"),
    ("mesh off the device count", [VIT, _param("MeshSpec.data=3")], "data=3"),
    ("two -1 mesh axes", [VIT, _param("MeshSpec.expert=-1")], "expert=-1"),
    (
        "experts not divisible by the expert axis",
        [VMOE, _param("MoeSpec.num_experts=6"), _param("MeshSpec.expert=4")],
        "6",
    ),
    ("image not divisible by patch", [VIT, _param("VitSpec.patch_size=5")], "patch_size=5"),
    ("heads not dividing width", [VIT, _param("VitSpec.num_heads=5")], "num_heads=5"),
    ("unknown family", [VIT, _param("ModelSpec.family='resnet'")], "resnet"),
    ("unknown loss", [VIT, _param("TrainSpec.loss='hinge'")], "hinge"),
    (
        "zero steps",
        [VIT, _param("TrainSpec.num_epochs=None"), _param("TrainSpec.num_steps=0")],
        "num_steps=0",
    ),
    ("batch not divisible by devices", [VIT, _param("DataSpec.batch_size=12")], "batch_size=12"),
    ("unknown dataset", [VIT, _param("DataSpec.dataset='mnist2'")], "mnist2"),
    ("missing gin file", ["--gin_file=gin/nope.gin"], "gin/nope.gin"),
    ("no gin file", [_param("VitSpec.model_dims=8")], "--gin_file"),
    # Every spec field's range, checked where the spec declares it (issue 19).
    ("batch 0", [VIT, _param("DataSpec.batch_size=0")], "batch_size=0"),
    ("batch -4", [VIT, _param("DataSpec.batch_size=-4")], "batch_size=-4"),
    ("batch -128", [VIT, _param("DataSpec.batch_size=-128")], "batch_size=-128"),
    ("batch beyond the split", [VIT, _param("DataSpec.batch_size=1000000000000")], "60000"),
    ("eval batch 0", [VIT, _param("DataSpec.eval_batch_size=0")], "eval_batch_size=0"),
    ("shuffle buffer 0", [VIT, _param("DataSpec.shuffle_buffer=0")], "shuffle_buffer=0"),
    ("unknown augment", [VIT, _param("DataSpec.augment='foo'")], "augment='foo'"),
    ("empty train split", [VIT, _param("DataSpec.train_split='train[:0]'")], "train[:0]"),
    ("empty eval split", [VIT, _param("DataSpec.eval_split='test[:0]'")], "test[:0]"),
    ("unknown split", [VIT, _param("DataSpec.train_split='trian'")], "trian"),
    ("C = inf", [VMOE, _param("MoeSpec.capacity_factor=1e999")], "capacity_factor=inf"),
    ("C = 'inf' literal", [VMOE, _param("MoeSpec.capacity_factor=inf")], "capacity_factor"),
    ("E = 0", [VMOE, _param("MoeSpec.num_experts=0")], "num_experts E=0"),
    ("patch 0", [VIT, _param("VitSpec.patch_size=0")], "patch_size=0"),
    ("heads 0", [VIT, _param("VitSpec.num_heads=0")], "num_heads=0"),
    ("negative width", [VIT, _param("VitSpec.model_dims=-64")], "model_dims=-64"),
    ("no layers", [VIT, _param("VitSpec.num_layers=0")], "num_layers=0"),
    ("dropout 1.5", [VIT, _param("VitSpec.dropout_prob=1.5")], "dropout_prob=1.5"),
    ("lr inf", [VIT, _param("OptimizerSpec.learning_rate=1e999")], "learning_rate=inf"),
    ("negative warm-up", [VIT, _param("OptimizerSpec.warmup_steps=-1")], "warmup_steps=-1"),
    ("label smoothing 2", [VIT, _param("TrainSpec.label_smoothing=2")], "label_smoothing=2"),
    ("epochs inf", [VIT, _param("TrainSpec.num_epochs=1e999")], "num_epochs=inf"),
]


@pytest.fixture(autouse=True)
def _clean_state():
    flags.FLAGS.unparse_flags()
    yield
    flags.FLAGS.unparse_flags()
    gin.clear_config()


def _assert_usage_error(args: list[str], expected: str) -> str:
    flags.FLAGS(["run", *args])
    with pytest.raises(UsageError) as error:
        run.main([])
    message = str(error.value)
    assert "\n" not in message
    assert expected in message, message
    return message


@pytest.mark.parametrize("case, args, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_names_the_value_and_writes_nothing(tmp_path, case, args, expected):
    workdir = tmp_path / "run"
    _assert_usage_error([*args, f"--workdir={workdir}"], expected)
    assert os.listdir(tmp_path) == []


def test_recursive_gin_include(tmp_path):
    (tmp_path / "a.gin").write_text(f"include '{tmp_path / 'b.gin'}'\n")
    (tmp_path / "b.gin").write_text(f"include '{tmp_path / 'a.gin'}'\n")
    workdir = tmp_path / "run"
    _assert_usage_error([f"--gin_file={tmp_path / 'a.gin'}", f"--workdir={workdir}"], "loop")
    assert sorted(os.listdir(tmp_path)) == ["a.gin", "b.gin"]


def test_data_dir_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("mine")
    data_dir = blocker / "tensorflow_datasets"
    _assert_usage_error(
        [VIT, _param(f"DataSpec.data_dir='{data_dir}'"), f"--workdir={tmp_path / 'run'}"],
        "DataSpec.data_dir",
    )
    assert os.listdir(tmp_path) == ["a_file"] and blocker.read_text() == "mine"


def test_missing_dataset_says_how_to_prepare_it(tmp_path):
    workdir = tmp_path / "run"
    empty = tmp_path / "tensorflow_datasets"
    empty.mkdir()
    message = _assert_usage_error(
        [
            VIT,
            _param("DataSpec.dataset='cifar10'"),
            _param(f"DataSpec.data_dir='{empty}'"),
            f"--workdir={workdir}",
        ],
        "cifar10",
    )
    assert "download_and_prepare" in message or "tfds build" in message
    assert not workdir.exists()


def test_unwritable_workdir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("mine")
    _assert_usage_error([VIT, f"--workdir={blocker / 'run'}"], str(blocker / "run"))
    assert blocker.read_text() == "mine"


def test_missing_workdir_flag():
    _assert_usage_error([VIT], "--workdir")


@pytest.mark.slow  # subprocesses importing the stack: ~30 s each on 2 busy cores
@pytest.mark.parametrize(
    "binding, expected",
    [("MoeSpec.num_selected_experts=9", "k=9"), ("DataSpec.batch_size=0", "batch_size=0")],
)
def test_cli_exits_2_with_one_line_and_leaves_an_existing_workdir_alone(
    tmp_path, binding, expected
):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("mine")
    process = subprocess.run(
        [sys.executable, "-m", "harness.run", VMOE, _param(binding), f"--workdir={workdir}"],
        cwd=gin_config.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 2, process.stderr[-2000:]
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert os.listdir(workdir) == ["notes.txt"]


# --- Other commands' flags (sweep, report) and the flag parser itself ---------------------------


def _assert_flag_error(argv: list[str], expected: str, capsys) -> None:
    """The flag parser every command uses: one stderr line and exit code 2."""
    with pytest.raises(SystemExit) as stop:
        app._parse_flags(argv)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["run", "--no_such_flag=1"], "no_such_flag"),
        (["sweep", "--timing_batch_size=0"], "timing_batch_size"),
        (["report", "--timing_repeats=0"], "timing_repeats"),
    ],
)
def test_flag_errors_are_one_line(argv, expected, capsys):
    _assert_flag_error(argv, expected, capsys)


@pytest.mark.parametrize(
    "values, expected",
    [(["0"], "C=0.0"), (["nan"], "C=nan"), (["inf"], "C=inf"), (["big"], "must be numbers")],
)
def test_sweep_capacities_must_be_positive_finite_numbers(values, expected):
    with pytest.raises(UsageError, match=re.escape(expected)):
        sweep.parse_capacities(values)


def test_sweep_k_above_the_run_experts_is_one_line(tmp_path):
    gin_config.parse_gin([VMOE.split("=", 1)[1]], [])
    experiment = Experiment.from_gin()
    trained = restore.TrainedRun(
        run_dir=str(tmp_path), sharded=SimpleNamespace(experiment=experiment), params=None, step=1
    )
    with pytest.raises(
        UsageError, match=f"k=99 exceeds the run's E={experiment.model.moe.num_experts}"
    ):
        routing_sweep.sweep(trained, [1.0], [1, 99], timing_batch_size=8)
    with pytest.raises(UsageError, match="k=0"):
        sweep.parse_ks(["0"])


@pytest.mark.parametrize("values", [["0"], ["-1"], ["1", "-64"]])
def test_report_batch_sizes_must_be_positive(values):
    with pytest.raises(UsageError, match="must all be >= 1"):
        report_cli.parse_batch_sizes(values)


def _report(args: list[str]) -> None:
    positional = flags.FLAGS(["report", *args])[1:]
    report_cli.main(positional)


def test_report_output_that_is_a_directory_leaves_nothing_behind(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(UsageError, match="is a directory") as error:
        _report([str(tmp_path), f"-o={tmp_path / 'out'}"])
    assert "\n" not in str(error.value)
    assert os.listdir(tmp_path) == ["out"] and os.listdir(tmp_path / "out") == []


def test_report_output_that_cannot_be_written_leaves_nothing_behind(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("mine")
    with pytest.raises(UsageError, match="cannot be written"):
        _report([str(tmp_path), f"-o={blocker / 'reports' / 'r.md'}"])
    assert os.listdir(tmp_path) == ["a_file"] and blocker.read_text() == "mine"
