"""Issue 26: a numeric flag this machine would pay for before anything checks it is bounded by
what the data and memory allow, with one line (UsageError: exit 2), and nothing is started:
`inspect --batch=10**12` segfaulted XLA, `--mesh=1,100000,1` hung making CPU devices,
`fewshot --seeds=10**9` was OOM-killed, `--shots=100000` was reported as a 100000-shot result,
a timing batch of 10**8 was a MemoryError."""

import gin
import numpy as np
import pytest
from absl import flags

from harness import limits
from harness.checkpoint_formats import safetensors_file
from harness.cli import fewshot as fewshot_cli
from harness.cli import inspect as inspect_cli
from harness.cli import report as report_cli
from harness.cli import sweep as sweep_cli
from harness.errors import UsageError
from harness.transfer import fewshot


@pytest.fixture(autouse=True)
def _clean():
    yield
    flags.FLAGS.unparse_flags()
    gin.clear_config()


def _one_line(caught: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(caught.value)
    assert "\n" not in message and all(p in message for p in parts), message


def _main(main, name: str, args: list[str], argv: list[str]) -> None:
    flags.FLAGS.unparse_flags()
    flags.FLAGS([name, *argv])
    main(args)


def test_inspect_refuses_a_mesh_of_more_devices_than_any_machine():
    with pytest.raises(UsageError) as caught:
        inspect_cli.parse_mesh("1,100000,1")
    _one_line(caught, "--mesh=1,100000,1", str(inspect_cli.MAX_MESH_DEVICES))
    assert inspect_cli.parse_mesh("8,32,1") == [8, 32, 1]  # the paper's V-MoE-H mesh


def test_inspect_refuses_a_plan_it_cannot_compile_before_compiling(monkeypatch):
    def no_plan(*args, **kwargs):
        raise AssertionError("the memory plan was compiled")

    monkeypatch.setattr(inspect_cli, "memory_plan_of", no_plan)
    monkeypatch.setattr(inspect_cli, "request_host_devices", no_plan)
    batch = 10**12
    with pytest.raises(UsageError) as caught:
        _main(inspect_cli.main, "inspect", [], ["--gin_file=gin/cpu/vit.gin", f"--batch={batch}"])
    _one_line(caught, f"--batch={batch}", f"{batch} images per device")
    # Split over the data axis and micro-batches, the same images per device are allowed.
    inspect_cli.check_plan_size([128, 1, 1], 128 * inspect_cli.MAX_PLAN_IMAGES, False, 1)
    inspect_cli.check_plan_size([1, 1, 1], 2 * inspect_cli.MAX_PLAN_IMAGES, False, 2)
    with pytest.raises(UsageError) as caught:
        inspect_cli.check_plan_size([1, 1024, 1], 1024, False, 1)
    _one_line(caught, "--mesh=1,1024,1", "1024 simulated CPU devices")


def test_fewshot_refuses_more_seeds_than_it_draws_before_reading_the_run():
    with pytest.raises(UsageError) as caught:
        _main(fewshot_cli.main, "fewshot", ["/nonexistent/run"], ["--seeds=1000000000"])
    _one_line(caught, "--seeds=1000000000", str(limits.MAX_SEEDS))


def test_more_shots_than_the_smallest_class_has_are_refused():
    labels = np.array([0] * 7 + [1] * 5 + [2] * 9)
    features = np.random.default_rng(0).normal(size=(labels.size, 4))
    with pytest.raises(UsageError) as caught:
        fewshot.evaluate_dataset(
            "toy", features, labels, features, labels, 3, shots=(1, 6), seeds=(0,)
        )
    _one_line(caught, "shots=6", "5 train examples", "class 1", "shots <= 5")
    results = fewshot.evaluate_dataset(
        "toy", features, labels, features, labels, 3, shots=(5,), seeds=(0,)
    )
    assert [r.shots for r in results] == [5]


def test_sweep_refuses_a_timing_batch_over_the_limit_before_reading_the_run():
    with pytest.raises(UsageError) as caught:
        _main(sweep_cli.main, "sweep", ["/nonexistent/run"], ["--timing_batch_size=100000000"])
    _one_line(caught, "--timing_batch_size=100000000", str(limits.MAX_TIMING_BATCH))


def test_report_refuses_a_timing_batch_over_the_limit():
    with pytest.raises(UsageError) as caught:
        report_cli.parse_batch_sizes(["1", "100000000"])
    _one_line(caught, "--batch_sizes=100000000")
    largest = limits.MAX_TIMING_BATCH
    assert report_cli.parse_batch_sizes(["1", str(largest)]) == [1, largest]


def test_a_deeply_nested_safetensors_header_is_a_format_error():
    text = b"[" * 100_000 + b"]" * 100_000
    data = len(text).to_bytes(8, "little") + text
    with pytest.raises(safetensors_file.FormatError, match="not JSON"):
        safetensors_file.decode(data)
