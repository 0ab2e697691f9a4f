"""`python -m harness.inspect`: the JSON record, the table, and one-line usage errors (their
exit code 2 comes from the shared errors.run_cli, tested end to end in test_bad_input.py)."""

import json
import subprocess
import sys

import gin
import pytest
from absl import flags

from harness import gin_config
from harness.cli import inspect
from harness.errors import UsageError


def _subprocess(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.inspect", *args],
        cwd=gin_config.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _in_process(*args: str) -> None:
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["inspect", *args])
    try:
        inspect.main([])
    finally:
        gin.clear_config()


def test_json_record_of_a_paper_config():
    process = _subprocess("--gin_file=gin/vmoe_s32.gin", "--json", "--mesh=1,8,1")
    assert process.returncode == 0, process.stderr[-2000:]
    record = json.loads(process.stdout)
    assert record["family"] == "vmoe"
    assert record["params_total"] > record["params_body"] > record["params_active"]
    assert record["xla_gflops_per_image"] > record["gflops_per_image"] > 0
    assert record["mesh"] == {"data": 1, "expert": 8, "model": 1}
    assert record["param_bytes_per_device"] < 4 * record["params_total"] / 2


def test_table_for_people(capsys):
    _in_process("--gin_file=gin/cpu/vit.gin", "--noxla_flops")
    table = capsys.readouterr().out
    assert "params_total" in table
    assert "205,066" in table  # the tiny ViT, as bench/cpu_configs.py reports it


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--gin_file=gin/vit_b16.gin", "--gin_param=VitSpec.widht=3"], "widht"),
        (
            ["--gin_file=gin/vmoe_s32.gin", "--gin_param=MoeSpec.num_selected_experts=40"],
            "k=40",
        ),
        (["--gin_file=gin/vit_b16.gin", "--mesh=2,2"], "--mesh=2,2"),
        (["--gin_param=VitSpec.model_dims=8"], "--gin_file is required"),
    ],
)
def test_bad_input_is_a_usage_error_naming_the_value(args, expected):
    with pytest.raises(UsageError, match=expected.replace("-", r"\-")) as error:
        _in_process(*args)
    assert "\n" not in str(error.value)
