"""`python -m harness.inspect`: the JSON record, the table, and one-line errors with exit 2."""

import json
import subprocess
import sys

import pytest

from harness import config


def _inspect(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.inspect", *args],
        cwd=config.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_json_record_of_a_paper_config():
    process = _inspect("--gin_file=gin/vmoe_s32.gin", "--json", "--mesh=1,8,1")
    assert process.returncode == 0, process.stderr[-2000:]
    record = json.loads(process.stdout)
    assert record["family"] == "vmoe"
    assert record["params_total"] > record["params_body"] > record["params_active"]
    assert record["xla_gflops_per_image"] > record["gflops_per_image"] > 0
    assert record["mesh"] == {"data": 1, "expert": 8, "model": 1}
    assert record["param_bytes_per_device"] < 4 * record["params_total"] / 2


def test_table_for_people():
    process = _inspect("--gin_file=gin/cpu/vit.gin", "--noxla_flops")
    assert process.returncode == 0, process.stderr[-2000:]
    assert "params_total" in process.stdout
    assert "gflops_per_image" in process.stdout


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--gin_file=gin/nope.gin"], "--gin_file=gin/nope.gin does not exist"),
        (["--gin_file=gin/vit_b16.gin", "--gin_param=VitSpec.widht=3"], "widht"),
        (
            ["--gin_file=gin/vmoe_s32.gin", "--gin_param=MoeSpec.num_selected_experts=40"],
            "k=40",
        ),
        (["--gin_file=gin/vit_b16.gin", "--mesh=2,2"], "--mesh=2,2"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args, expected):
    process = _inspect(*args)
    assert process.returncode == 2
    lines = process.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ")
    assert expected in lines[-1]
