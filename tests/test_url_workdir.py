"""A URL workdir (gs://...) is refused in one line before anything is written, instead of
training into a local folder named 'gs:'."""

import os

import pytest

from harness.errors import UsageError
from harness.train import launch


@pytest.mark.parametrize("workdir", ["gs://bucket/runs/vmoe", "ram://runs/vit"])
def test_a_url_workdir_is_refused_and_nothing_is_written(workdir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=f"--workdir={workdir} is a URL.*local directory"):
        launch.make_workdir(workdir)
    assert os.listdir(tmp_path) == []


def test_a_local_workdir_is_still_created(tmp_path):
    workdir = str(tmp_path / "runs" / "vit")
    launch.make_workdir(workdir)
    assert os.path.isdir(workdir)
