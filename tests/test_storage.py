"""harness/storage.py and what builds on it, on a local folder and on a URL: TensorFlow's
in-memory ram:// file system stands in for gs:// (no network in tests)."""

import json
import os
import uuid

import jax.numpy as jnp
import numpy as np
import pytest

from harness import files, storage
from harness.errors import UsageError
from harness.run_dir import checkpoint_steps
from harness.run_dir import lock as workdir_lock
from harness.run_dir.checksums import CHECKSUM_FILE
from harness.runtime import checkpointing
from harness.runtime.staged_checkpoints import StagedManager
from harness.train import launch


def _url() -> str:
    return f"ram://{uuid.uuid4().hex}/work"  # ram:// is one file system per process


@pytest.fixture(params=["local", "url"])
def root(request, tmp_path, monkeypatch) -> str:
    monkeypatch.chdir(tmp_path)  # a URL mangled into a local path would land here
    if request.param == "local":
        return str(tmp_path / "work")
    return _url()


def test_files_and_folders_round_trip(root):
    storage.makedirs(storage.join(root, "a", "b"))
    storage.makedirs(storage.join(root, "a", "b"))  # an existing folder is fine
    files.write_text_atomically(storage.join(root, "a", "b", "x.txt"), "héllo")
    files.write_json_atomically(storage.join(root, "a", "y.json"), {"k": np.float32(1.5)})
    assert storage.read_text(storage.join(root, "a", "b", "x.txt")) == "héllo"
    assert json.loads(storage.read_text(storage.join(root, "a", "y.json"))) == {"k": 1.5}
    assert storage.isdir(storage.join(root, "a")) and not storage.isfile(storage.join(root, "a"))
    assert storage.isfile(storage.join(root, "a", "y.json"))
    assert not storage.exists(storage.join(root, "nothing"))
    assert sorted(storage.listdir(storage.join(root, "a"))) == ["b", "y.json"]
    walked = sorted(
        storage.relative(storage.join(folder, name), root)
        for folder, _, names in storage.walk(root)
        for name in names
    )
    assert walked == ["a/b/x.txt", "a/y.json"]
    storage.rename(storage.join(root, "a", "y.json"), storage.join(root, "a", "z.json"))
    assert storage.listdir(storage.join(root, "a")) in (["b", "z.json"], ["z.json", "b"])
    storage.remove(storage.join(root, "a", "z.json"))
    storage.rmtree(storage.join(root, "a"))
    storage.rmtree(storage.join(root, "a"))  # a missing folder is fine
    assert not storage.exists(storage.join(root, "a", "b", "x.txt"))
    with pytest.raises(FileNotFoundError):
        storage.read_text(storage.join(root, "missing.json"))


def test_a_failed_replacement_keeps_the_old_file(root):
    storage.makedirs(root)
    path = storage.join(root, "results.json")
    files.write_text_atomically(path, "old")
    with pytest.raises(RuntimeError), files.replacing(path) as temporary:
        with open(temporary, "w") as f:
            f.write("half")
        raise RuntimeError("killed")
    assert storage.read_text(path) == "old"
    with files.replacing(path) as temporary, open(temporary, "w") as f:
        f.write("new")
    assert storage.read_text(path) == "new"
    assert storage.listdir(root) == ["results.json"]  # no temporary file left beside it


def test_copy_tree_and_local_copy_between_url_and_disk(tmp_path):
    url = _url()
    storage.makedirs(storage.join(url, "s", "1"))
    files.write_text_atomically(storage.join(url, "s", "1", "f"), "one")
    files.write_text_atomically(storage.join(url, "s", "2"), "two")
    with storage.local_copy(storage.join(url, "s")) as local:
        assert not storage.is_url(local) and os.path.basename(local) == "s"
        with open(os.path.join(local, "1", "f")) as f:
            assert f.read() == "one"
        storage.copy_tree(local, str(tmp_path / "back"))
    assert not os.path.exists(local)  # the download goes with the block
    assert sorted(os.listdir(tmp_path / "back")) == ["1", "2"]


def test_urls_are_never_made_local_paths():
    assert storage.absolute("gs://bucket/runs/vit") == "gs://bucket/runs/vit"
    assert storage.absolute("runs/vit") == os.path.abspath("runs/vit")
    assert storage.relative("gs://b/run/checkpoints/3/x", "gs://b/run/") == "checkpoints/3/x"
    assert storage.orbax_writes("gs://bucket/run") and storage.orbax_writes("/tmp/run")
    assert not storage.orbax_writes("ram://run") and not storage.orbax_writes("s3://b/run")


def test_a_url_checkpoint_counts_once_it_is_marked_finished(tmp_path):
    url = _url()
    directory = storage.join(url, checkpoint_steps.CHECKPOINT_DIR)
    for step in ("1", "2", "3", "4.orbax-checkpoint-tmp-5"):
        storage.makedirs(storage.join(directory, step))
    files.write_text_atomically(storage.join(directory, "1", checkpoint_steps.COMMIT_FILE), "ok")
    files.write_text_atomically(storage.join(directory, "2", CHECKSUM_FILE), "{}")
    # 3: an upload cut short; 2: copied from a local run (checksums, no orbax marker).
    assert checkpoint_steps.saved_steps(url) == [1, 2]
    checkpoint_steps.mark_copied(directory)
    assert storage.exists(storage.join(directory, "2", checkpoint_steps.COMMIT_FILE))
    assert not storage.exists(storage.join(directory, "3", checkpoint_steps.COMMIT_FILE))
    # Locally orbax renames a finished save to its step, so the name is enough.
    os.makedirs(tmp_path / "checkpoints" / "7")
    os.makedirs(tmp_path / "checkpoints" / "8.orbax-checkpoint-tmp-9")
    assert checkpoint_steps.saved_steps(str(tmp_path)) == [7]


def test_staged_checkpoints_save_restore_and_keep_the_newest(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    monkeypatch.chdir(tmp_path)
    directory = storage.join(_url(), "checkpoints")
    manager = StagedManager(directory, keep=2, writes=True)
    storage.makedirs(storage.join(directory, "3", "default"))  # left by a killed upload
    for step in (1, 2, 3):
        manager.save(step, ocp.args.StandardSave({"w": jnp.full((4,), float(step))}))
    assert manager.all_steps() == [2, 3] and manager.latest_step() == 3
    abstract = {"w": jnp.zeros((4,))}
    restored = manager.restore(3, ocp.args.StandardRestore(abstract))
    np.testing.assert_array_equal(restored["w"], np.full((4,), 3.0))
    assert os.listdir(tmp_path) == []


def test_a_gs_workdir_is_handed_to_orbax_as_the_url(monkeypatch):
    seen = {}

    class Recorder:
        def __init__(self, directory, options):
            seen["directory"] = directory

    monkeypatch.setattr(checkpointing.ocp, "CheckpointManager", Recorder)
    monkeypatch.setattr(checkpoint_steps, "mark_copied", lambda d: seen.setdefault("marked", d))
    checkpointer = checkpointing.Checkpointer("gs://bucket/runs/vit", keep=2)
    assert seen == {"directory": "gs://bucket/runs/vit/checkpoints"} | {
        "marked": "gs://bucket/runs/vit/checkpoints"
    }
    assert checkpointer.step_dir(4) == "gs://bucket/runs/vit/checkpoints/4"
    # orbax then writes the arrays with tensorstore's gcs driver, not to a local 'gs:' folder.
    from orbax.checkpoint import type_handlers

    spec = type_handlers.get_tensorstore_spec(checkpointer.step_dir(4) + "/default", "params")
    assert spec["kvstore"]["base"] == "gs://bucket/runs/vit/checkpoints/4/default"


def test_a_url_workdir_is_created_and_not_locked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    workdir = _url()
    launch.make_workdir(workdir)
    assert storage.isdir(workdir)
    with workdir_lock.locked(workdir):
        pass
    warning = capsys.readouterr().err.strip()
    assert warning.startswith(f"warning: --workdir={workdir} is a URL, which cannot be locked")
    assert len(warning.splitlines()) == 1
    assert storage.listdir(workdir) == [] and os.listdir(tmp_path) == []


def test_a_url_of_no_known_file_system_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"--workdir=nosuch://b/run cannot be created .*'nosuch'"):
        launch.make_workdir("nosuch://b/run")
    assert os.listdir(tmp_path) == []


def test_a_local_workdir_is_still_created(tmp_path):
    workdir = str(tmp_path / "runs" / "vit")
    launch.make_workdir(workdir)
    assert os.path.isdir(workdir)


def test_a_report_output_on_a_url_is_refused_in_one_line(tmp_path, monkeypatch):
    from harness.reporting import report

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"--output=gs://b/r.md is a URL; .* written locally"):
        report.check_output("gs://b/r.md")
    assert os.listdir(tmp_path) == []
