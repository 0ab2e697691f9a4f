"""Issue 26: harness.run's multi-host flags are all three or none (or --distributed alone),
in range, and a coordinator that is HOST:PORT and resolves; anything else is one line, exit 2,
before the config is even parsed."""

import jax
import pytest
from absl import flags

from harness.cli import run as run_cli
from harness.config import experiment
from harness.errors import UsageError
from harness.train import launch, multihost


@pytest.fixture(autouse=True)
def _clean_flags():
    yield
    flags.FLAGS.unparse_flags()


@pytest.mark.parametrize(
    "flag_values, expected",
    [
        ((None, None, None, True), None),  # a TPU pod: jax finds the rest
        ((None, None, None, False), None),  # one process
        (("localhost:1234", 2, 1, False), None),
        (("localhost:1234", None, None, False), "needs --num_processes and --process_id"),
        (("localhost:1234", 2, None, False), "needs --process_id"),
        ((None, 2, 0, False), "without --coordinator_address would be ignored"),
        (("localhost:1234", -1, 0, False), "--num_processes=-1 must be >= 1"),
        ((None, -1, None, True), "--num_processes=-1 must be >= 1"),
        (("localhost:1234", 2, 2, False), "--process_id=2 is not below --num_processes=2"),
        (("localhost:1234", 2, -1, False), "--process_id=-1 must be >= 0"),
        (("localhost", 2, 0, False), "is not HOST:PORT"),
        (("localhost:99999", 2, 0, False), "is not HOST:PORT"),
        (("no-such-host.invalid:1234", 2, 0, False), "does not resolve"),
    ],
)
def test_multihost_flags(flag_values, expected):
    if expected is None:
        multihost.check_flags(*flag_values)
        return
    with pytest.raises(UsageError) as caught:
        multihost.check_flags(*flag_values)
    assert "\n" not in str(caught.value) and expected in str(caught.value), str(caught.value)


def test_run_refuses_them_before_parsing_the_config(monkeypatch, tmp_path):
    def no_parse(*args, **kwargs):
        raise AssertionError("the config was parsed")

    monkeypatch.setattr(experiment, "parse_experiment", no_parse)
    flags.FLAGS.unparse_flags()
    flags.FLAGS(
        ["run", "--gin_file=gin/cpu/vit.gin", f"--workdir={tmp_path}/r", "--num_processes=-1"]
    )
    with pytest.raises(UsageError, match="--num_processes=-1"):
        run_cli.main([])
    assert not (tmp_path / "r").exists()


def test_a_failed_jax_distributed_start_is_one_line(monkeypatch):
    def fail(**kwargs):
        raise ValueError("coordinator_address should be defined.\nmore detail")

    monkeypatch.setattr(jax.distributed, "initialize", fail)
    with pytest.raises(UsageError) as caught:
        launch.init_distributed(None, None, None, auto=True)
    message = str(caught.value)
    assert "\n" not in message and "coordinator_address should be defined" in message
