"""`python -m harness.inspect`: the JSON record, the table, and one-line usage errors (their
exit code 2 comes from the shared harness.cli.app.run, tested end to end in test_bad_input.py)."""

import json
import os
import subprocess
import sys

import gin
import pytest
from absl import flags

from harness.cli import inspect
from harness.config import gin_config
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
        (["--gin_file=gin/vit_b16.gin", "--batch=0"], "--batch=0"),
        (
            ["--gin_file=gin/vmoe_s32.gin", "--mesh=1,8,1", "--batch=12", "--noxla_flops"],
            "--batch=12",
        ),
        (
            [
                "--gin_file=gin/vmoe_s32.gin",
                "--mesh=1,8,1",
                "--batch=128",
                "--noxla_flops",
                "--gin_param=TrainSpec.microbatches=4",
            ],
            "TrainSpec.microbatches=4",
        ),
    ],
)
def test_bad_input_is_a_usage_error_naming_the_value(args, expected):
    with pytest.raises(UsageError, match=expected.replace("-", r"\-")) as error:
        _in_process(*args)
    assert "\n" not in str(error.value)


def test_memory_plan_asks_for_its_cpu_devices_before_jax_starts(monkeypatch):
    monkeypatch.delitem(sys.modules, "jax")  # as in a fresh `python -m harness.inspect`
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    inspect.request_host_devices(32)
    assert os.environ["XLA_FLAGS"] == (
        "--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=32"
    )
    inspect.request_host_devices(64)  # a count already set is kept
    assert os.environ["XLA_FLAGS"].endswith("=32")


@pytest.mark.slow
def test_memory_plan_from_a_fresh_process_sets_its_own_device_count():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    args = ["--gin_file=gin/cpu/vmoe.gin", "--json", "--mesh=2,2,1", "--batch=32", "--noxla_flops"]
    process = subprocess.run(
        [sys.executable, "-m", "harness.inspect", *args],
        cwd=gin_config.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert process.returncode == 0, process.stderr[-2000:]
    plan = json.loads(process.stdout)["memory_plan"]
    assert plan["mesh"] == [2, 2, 1] and plan["per_device_batch"] == 8
    assert plan["optimizer"] == 2 * plan["params"]
    assert plan["total"] == plan["params"] + plan["optimizer"] + plan["batch"] + plan["activations"]
    assert plan["activations"] > 0 and plan["fits"]["TPU v3 core"] is True
    assert "2 simulated CPU device(s) as mesh (1, 2, 1)" in plan["method"]
