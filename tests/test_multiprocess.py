"""Processes of one job on any mesh see the same global batches, and so train to the same
loss, as one process with as many devices: the 'model' axis across processes (processes that
must read the same examples) and the 'data' axis across them (disjoint examples)."""

import os
import socket
import subprocess
import sys

import pytest

from harness import gin_config

WORKER = os.path.join(gin_config.REPO_ROOT, "tests/multihost_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(process_id: int, count: int, port: int, mesh: str, devices: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return subprocess.Popen(
        [sys.executable, WORKER, str(process_id), str(count), str(port), mesh],
        cwd=gin_config.REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _outcome(process: subprocess.Popen) -> tuple[list[int], list[float]]:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    lines = output.splitlines()
    batches = [int(line.split()[1]) for line in lines if line.startswith("BATCH")]
    losses = [float(line.split()[1]) for line in lines if line.startswith("LOSS")]
    return batches, losses


@pytest.mark.slow
@pytest.mark.parametrize("mesh", ["2,1,1", "1,1,2"])
def test_two_processes_train_like_one_process_with_two_devices(mesh):
    port = _free_port()
    # Started together, so the three compile at once.
    pair = [_launch(i, 2, port, mesh, devices=1) for i in range(2)]
    single = _launch(0, 1, port, mesh, devices=2)
    (batches_a, losses_a), (batches_b, losses_b) = (_outcome(p) for p in pair)
    reference_batches, reference = _outcome(single)
    assert batches_a == batches_b == reference_batches == [16, 16]
    assert losses_a == losses_b  # the processes compute one global step
    assert losses_a == pytest.approx(reference, rel=1e-5)
    assert reference[1] != reference[0]  # the second step saw the first update
