"""A run whose --workdir is a URL writes and reads every file there, through TensorFlow's file
system: the same tiny run trained into a local folder and into ram:// (TensorFlow's in-memory
file system, standing in for gs://, which needs the network) leaves the same files, and the
URL run is resumed, found finished and read back like a local one. harness/storage.py's own
tests, and checkpoints handed to orbax as gs:// URLs, are in tests/test_storage.py."""

import json
import os
import uuid

import gin
import pytest

from harness import storage
from harness.reporting import runs
from harness.run_dir import checkpoint_steps
from harness.run_dir import lock as workdir_lock
from harness.runtime import restore
from harness.train import launch

# Three tiny trainings (local, URL, a one-step resume), each paying its own compile.
pytestmark = pytest.mark.slow

GIN = ["gin/cpu/vit.gin"]
TINY = [
    "VitSpec.num_layers=1",
    "TrainSpec.num_epochs=None",
    "TrainSpec.num_steps=3",
    "TrainSpec.log_every_steps=1",
    "TrainSpec.checkpoint_every_steps=2",  # checkpoints 2 and 3 (the last step is saved)
    "TrainSpec.profile_steps=(2, 1)",
    "DataSpec.eval_split='test[:64]'",
]


def _train(workdir: str, bindings: list[str]) -> dict:
    try:
        return launch.train(GIN, bindings, workdir)
    finally:
        gin.clear_config()  # gin state would leak into the next test


def _files(root: str) -> set[str]:
    """Relative paths of every file under `root`, with the names a run draws afresh (event
    file, trace folder, orbax's content-addressed array chunks) written generically."""
    found = set()
    for folder, _, names in storage.walk(root):
        for name in names:
            parts = storage.relative(storage.join(folder, name), root).split("/")
            if name.startswith("events.out.tfevents."):
                parts[-1] = "events.out.tfevents.*"
            if parts[:2] == ["plugins", "profile"]:
                parts[2] = "*"
            if len(parts) > 1 and parts[-2] == "d":
                parts[-1] = "*"
            found.add("/".join(parts))
    return found


@pytest.fixture(scope="module")
def runs_dirs(tmp_path_factory) -> dict:
    """The same run trained into a local folder and into ram://, from an empty working
    directory (a URL mangled into a local path would land there as 'ram:')."""
    cwd = tmp_path_factory.mktemp("cwd")
    local = str(tmp_path_factory.mktemp("local") / "run")
    url = f"ram://{uuid.uuid4().hex}/runs/vit"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        results = {"local": _train(local, TINY), "url": _train(url, TINY)}
    return {"local": local, "url": url, "cwd": str(cwd), "results": results}


def test_the_url_run_writes_every_file_the_local_run_writes(runs_dirs):
    local, url = _files(runs_dirs["local"]), _files(runs_dirs["url"])
    assert "checkpoints/3/default/manifest.ocdbt" in local
    assert any(p.startswith("plugins/profile/") for p in local)
    # The URL has no lock file (object stores cannot be locked) and marks each checkpoint
    # finished the way orbax does on gs://; otherwise the very same files.
    assert local - {workdir_lock.LOCK_FILE} == url - {
        f"checkpoints/{step}/{checkpoint_steps.COMMIT_FILE}" for step in (2, 3)
    }
    assert checkpoint_steps.saved_steps(runs_dirs["url"]) == [2, 3]


def test_nothing_is_written_into_a_local_folder_named_after_the_scheme(runs_dirs):
    assert os.listdir(runs_dirs["cwd"]) == []
    assert not os.path.exists("ram:")


def test_results_json_reads_back_like_the_local_ones(runs_dirs):
    url = runs_dirs["url"]
    payload = json.loads(storage.read_text(storage.join(url, "results.json")))
    local = runs_dirs["results"]["local"]
    assert payload.keys() == local.keys()
    for section in ("run", "model", "train", "eval"):
        assert payload[section].keys() == local[section].keys(), section
    assert payload["run"]["workdir"] == url  # not made into a local absolute path
    assert payload["train"]["steps"] == 3
    assert payload["model"] == local["model"]
    assert storage.isfile(storage.join(url, "operative_config.gin"))


def test_rerunning_the_command_finds_the_url_run_finished(runs_dirs, capsys):
    again = _train(runs_dirs["url"], TINY)
    assert again == runs_dirs["results"]["url"]
    assert f"{runs_dirs['url']} has finished training" in capsys.readouterr().out


def test_the_report_reader_and_restore_read_the_url_run(runs_dirs):
    run = runs.load_run(runs_dirs["url"])
    assert run is not None and run.family == "vit"
    assert [step for step, _ in run.scalars["train/loss"]] == [1, 2, 3]
    trained = restore.load_trained(runs_dirs["url"])  # what evaluate, sweep, fewshot do
    assert trained.step == 3


def test_a_local_run_copied_to_a_url_resumes_there(runs_dirs, capsys, tmp_path, monkeypatch):
    """What `gsutil cp -r` of a local run gives: checkpoints with checksums but without the
    marker orbax puts on its own gs:// saves; they count, and a longer run resumes."""
    monkeypatch.chdir(tmp_path)
    workdir = runs_dirs["url"].replace("/runs/vit", "/runs/vit_copied")
    storage.copy_tree(runs_dirs["local"], workdir)
    longer = [*TINY, "TrainSpec.num_steps=4"]
    payload = _train(workdir, longer)
    assert "resuming from checkpoint at step 3 of 4" in capsys.readouterr().out
    assert payload["train"]["steps"] == 4
    assert [a["from_step"] for a in payload["attempts"]] == [0, 3]
    assert checkpoint_steps.saved_steps(workdir) == [3, 4]  # keep_checkpoints=2
    scalars = runs.load_run(workdir).scalars["train/loss"]
    assert [step for step, _ in scalars] == [1, 2, 3, 4]  # each step once
    assert os.listdir(tmp_path) == []
