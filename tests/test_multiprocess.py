"""Processes of one job on any mesh see the same global batches, and so train to the same
loss, as one process with as many devices: the 'model' axis across processes (processes that
must read the same examples) and the 'data' axis across them (disjoint examples)."""

import os
import socket
import subprocess
import sys

import pytest

from harness.config import gin_config

WORKER = os.path.join(gin_config.REPO_ROOT, "tests/multihost_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


MESHES = ("2,1,1", "1,1,2")


def _launch(process_id: int, count: int, port: int, devices: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return subprocess.Popen(
        [sys.executable, WORKER, str(process_id), str(count), str(port), *MESHES],
        cwd=gin_config.REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _outcome(process: subprocess.Popen) -> dict[str, tuple[list[int], list[float]]]:
    """Per mesh: the global batch size and the loss of each step."""
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    outcome: dict[str, tuple[list[int], list[float]]] = {}
    for line in output.splitlines():
        tag, _, value = line.partition(" ")
        if tag == "MESH":
            batches, losses = outcome[value] = ([], [])
        elif tag == "BATCH":
            batches.append(int(value))
        elif tag == "LOSS":
            losses.append(float(value))
    return outcome


@pytest.mark.slow
def test_two_processes_train_like_one_process_with_two_devices():
    port = _free_port()
    # Started together, so the three compile at once.
    pair = [_launch(i, 2, port, devices=1) for i in range(2)]
    single = _launch(0, 1, port, devices=2)
    first, second = (_outcome(p) for p in pair)
    reference = _outcome(single)
    assert sorted(reference) == sorted(MESHES)
    for mesh in MESHES:
        (batches, losses), (reference_batches, reference_losses) = first[mesh], reference[mesh]
        assert batches == reference_batches == [16, 16], mesh
        assert second[mesh] == first[mesh], mesh  # the processes compute one global step
        assert losses == pytest.approx(reference_losses, rel=1e-5), mesh
        assert reference_losses[1] != reference_losses[0]  # step 2 saw step 1's update
