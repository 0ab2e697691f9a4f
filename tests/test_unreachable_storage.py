"""Issue 26: a gs:// path (--checkpoint, --workdir, TrainSpec.init_from, a report's run
directory) on a machine without network is one line naming the path, exit 2, at once: before
TensorFlow's GCS client, which retries for minutes offline, is ever asked. The network is
never touched here: the connection probe is what fails."""

import socket

import gin
import pytest

from harness import storage
from harness.cli import preflight
from harness.run_dir import checkpoint_steps
from harness.train import launch


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No connection opens, as without network; yields the addresses asked for."""
    opened = []

    def no_network(address, *args, **kwargs):
        opened.append(address)
        raise OSError(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", no_network)
    storage._connection_problem.cache_clear()
    yield opened
    storage._connection_problem.cache_clear()
    gin.clear_config()


def _one_line(caught: pytest.ExceptionInfo, path: str) -> None:
    message = str(caught.value)
    assert "\n" not in message and message.startswith(path) and "cannot be reached" in message


@pytest.mark.parametrize("path", ["gs://bucket/run", "gs://bucket/vit.npz"])
def test_a_gs_checkpoint_is_one_line(offline, path):
    with pytest.raises(storage.Unreachable) as caught:
        preflight.existing_checkpoint(path)
    _one_line(caught, path)
    assert offline == [(storage.GCS_HOST, storage.GCS_PORT)]


def test_a_gs_init_from_is_one_line():
    path = "gs://bucket/pretrained"
    with pytest.raises(storage.Unreachable) as caught:
        checkpoint_steps.saved_steps(path)
    _one_line(caught, path)
    with pytest.raises(storage.Unreachable):
        preflight.existing_checkpoint(path, "TrainSpec.init_from")


def test_a_gs_workdir_is_one_line_before_training():
    path = "gs://bucket/runs/vit"
    with pytest.raises(storage.Unreachable) as caught:
        launch.make_workdir(path)
    _one_line(caught, path)


def test_gs_run_directories_for_the_report_are_one_line():
    with pytest.raises(storage.Unreachable) as caught:
        preflight.some_finished_run(["gs://bucket/a", "gs://bucket/b"])
    _one_line(caught, "gs://bucket/a/results.json")


def test_local_paths_and_other_schemes_are_not_probed(offline, tmp_path):
    assert not storage.exists(str(tmp_path / "x"))
    assert not storage.exists("ram://harness-test/nothing")
    assert offline == []


def test_a_reachable_endpoint_is_probed_once(monkeypatch):
    calls = []

    class Connection:
        def close(self):
            pass

    def connect(address, *args, **kwargs):
        calls.append(address)
        return Connection()

    monkeypatch.setattr(socket, "create_connection", connect)
    storage._connection_problem.cache_clear()
    storage.check_reachable("gs://bucket/a")
    storage.check_reachable("gs://bucket/b")
    assert calls == [(storage.GCS_HOST, storage.GCS_PORT)]
