"""Bad input to `python -m harness.run`: one line naming the value and the fix, exit code 2,
and nothing written to the workdir. Cases run in-process (one subprocess checks the exit code
and stderr end to end)."""

import os
import subprocess
import sys

import gin
import pytest
from absl import flags

from harness import gin_config
from harness.cli import run
from harness.errors import UsageError

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
    assert not workdir.exists()


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


def test_cli_exits_2_with_one_line_and_leaves_an_existing_workdir_alone(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("mine")
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.run",
            VMOE,
            _param("MoeSpec.num_selected_experts=9"),
            f"--workdir={workdir}",
        ],
        cwd=gin_config.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 2, process.stderr[-2000:]
    lines = process.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "k=9" in lines[-1]
    assert os.listdir(workdir) == ["notes.txt"]
