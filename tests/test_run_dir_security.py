"""A run directory is data: reading one (sweep, report, the suite) never executes anything
from it. Its config.gin could, since gin can import and call Python, so readers rebuild the
run from experiment.json and refuse a config.gin that imports code."""

import json
import os
import subprocess
import sys

import gin
import pytest
from absl import flags

from harness.config import experiment_file, gin_config
from harness.config.experiment import Experiment
from harness.config.suite_spec import SuiteSpec, run_dir
from harness.errors import UsageError
from harness.measure import run_timing
from harness.reporting.runs import warn
from harness.runtime import restore
from harness.suites import runner

HOSTILE_GIN = """\
from __gin__ import dynamic_registration
import subprocess
import models.specs

models.specs.ModelSpec.family = @subprocess.check_call()
subprocess.check_call.args = ['touch', '{marker}']
"""


def _plant(directory, marker) -> None:
    """A run directory whose config.gin would run `touch MARKER` if gin parsed it."""
    os.makedirs(directory / "checkpoints" / "2", exist_ok=True)
    (directory / "config.gin").write_text(HOSTILE_GIN.format(marker=marker))
    results = {
        "run": {"family": "vmoe"},
        "eval": {"eval/top1": 0.5},
        "model": {"params_total": 1},
    }
    (directory / "results.json").write_text(json.dumps(results))


@pytest.fixture(autouse=True)
def _clean_gin():
    yield
    gin.clear_config()
    flags.FLAGS.unparse_flags()


def test_the_planted_config_runs_a_command_when_gin_parses_it(tmp_path):
    # Shows the plant below is live: what gin would do with it, were it parsed.
    marker = tmp_path / "marker"
    _plant(tmp_path / "run", marker)
    with pytest.raises(ValueError):  # the command's exit code 0 is not a family name
        gin_config.parse_gin([str(tmp_path / "run" / "config.gin")], [])
        Experiment.from_gin()
    assert marker.exists()


def test_loading_refuses_a_run_directory_whose_gin_imports_code(tmp_path):
    marker = tmp_path / "marker"
    _plant(tmp_path / "run", marker)
    with pytest.raises(UsageError) as error:
        restore.load_trained(str(tmp_path / "run"))
    message = str(error.value)
    assert "\n" not in message and "imports Python code" in message, message
    assert not marker.exists()


def test_report_timing_skips_it_with_one_warning_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "marker"
    _plant(tmp_path / "run", marker)
    timings = run_timing.time_restored_runs({"run": str(tmp_path / "run")}, [1], 1, warn)
    assert timings == {}
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 1 and "imports Python code" in warnings[0], warnings
    assert not marker.exists()


def test_suite_sweep_refuses_it_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    spec = SuiteSpec(
        root=str(tmp_path / "suite"), seeds=1, runs=(("vmoe", "gin/cpu/vmoe.gin", []),)
    )
    planted = tmp_path / "suite" / "vmoe" / "seed_0"
    assert run_dir(spec, "vmoe", 0) == str(planted)
    _plant(planted, marker)
    with pytest.raises(UsageError, match="imports Python code"):
        runner.sweep_all(spec)
    assert not marker.exists()
    assert not (planted / "sweep.json").exists()


@pytest.mark.slow  # a subprocess importing the stack: ~45 s on 2 busy cores
def test_sweep_command_exits_2_with_one_line_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    _plant(tmp_path / "run", marker)
    before = sorted(os.listdir(tmp_path / "run"))
    process = subprocess.run(
        [sys.executable, "-m", "harness.sweep", str(tmp_path / "run")],
        cwd=gin_config.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 2, process.stderr[-2000:]
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and "imports Python code" in lines[0], lines
    assert not marker.exists()
    assert sorted(os.listdir(tmp_path / "run")) == before


def test_a_run_directory_without_experiment_json_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.gin").write_text("ModelSpec.family = 'vit'\n")
    with pytest.raises(UsageError, match=r"has no experiment\.json") as error:
        experiment_file.load_experiment(str(tmp_path / "run"))
    assert "\n" not in str(error.value)


def test_experiment_json_rebuilds_the_experiment_without_parsing_gin(tmp_path, monkeypatch):
    gin_config.parse_gin(["gin/cpu/vmoe.gin"], ["VitSpec.mlp_dims=96", "MoeSpec.num_experts=4"])
    experiment = Experiment.from_gin()
    experiment_file.write_experiment(str(tmp_path), experiment)
    # Other bindings in this process must not leak into the rebuilt specs either.
    gin_config.parse_gin(["gin/cpu/vit.gin"], ["VitSpec.mlp_dims=8"])

    def no_gin(*args, **kwargs):
        raise AssertionError("gin was parsed")

    monkeypatch.setattr(gin, "parse_config_files_and_bindings", no_gin)
    monkeypatch.setattr(gin, "parse_config", no_gin)
    assert experiment_file.load_experiment(str(tmp_path)) == experiment


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda d: d["model"]["vit"].update(num_heads=0), "num_heads=0"),
        (lambda d: d["data"].update(batch_size="all"), "batch_size='all'"),
        (lambda d: d["train"].update(shell="rm -rf /"), "unknown field 'shell'"),
        (lambda d: d.update(model=[]), "must be a JSON object"),
    ],
    ids=["range", "type", "unknown field", "not an object"],
)
def test_a_bad_value_in_experiment_json_is_one_line(tmp_path, edit, expected):
    gin_config.parse_gin(["gin/cpu/vit.gin"], [])
    data = experiment_file.experiment_to_data(Experiment.from_gin())
    edit(data)
    (tmp_path / experiment_file.EXPERIMENT_FILE).write_text(json.dumps(data))
    with pytest.raises(UsageError) as error:
        experiment_file.load_experiment(str(tmp_path))
    assert "\n" not in str(error.value) and expected in str(error.value), str(error.value)
