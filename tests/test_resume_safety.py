"""What a rerun, a second process, a damaged file or a full disk may do to a workdir: never
lose or silently change what it holds."""

import errno
import hashlib
import os
import shutil
import subprocess
import sys

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from clu import metric_writers

from harness.config import gin_config
from harness.errors import UsageError
from harness.run_dir import events
from harness.run_dir import lock as workdir_lock
from harness.runtime import checkpointing, restore
from harness.runtime.checkpointing import CHECKPOINT_DIR, Checkpointer, DiskFullError
from harness.train import launch

TINY = [
    "VitSpec.num_layers=1",
    "TrainSpec.num_epochs=None",
    "TrainSpec.num_steps=2",
    "TrainSpec.checkpoint_every_steps=1",
    "DataSpec.eval_split='test[:200]'",
]


@pytest.fixture(autouse=True)
def _clear_gin():
    yield
    gin.clear_config()


def _snapshot(directory) -> dict[str, tuple[str, int]]:
    """Every file under `directory`: its content hash and modification time."""
    found = {}
    for folder, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, directory)] = (
                    hashlib.sha256(f.read()).hexdigest(),
                    os.stat(path).st_mtime_ns,
                )
    return found


def _flip_a_byte(path: str) -> None:
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def _largest_file(directory: str) -> str:
    paths = [os.path.join(d, n) for d, _, names in os.walk(directory) for n in names]
    return max(paths, key=os.path.getsize)


# --- A trained run ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> str:
    workdir = str(tmp_path_factory.mktemp("trained") / "run")
    launch.train(["gin/cpu/vit.gin"], TINY, workdir)
    gin.clear_config()
    return workdir


def _copy(trained: str, tmp_path) -> str:
    copy = str(tmp_path / "run")
    shutil.copytree(trained, copy)
    return copy


@pytest.mark.slow
def test_resuming_with_another_model_is_refused_and_touches_nothing(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    before = _snapshot(workdir)
    with pytest.raises(UsageError) as error:
        launch.train(["gin/cpu/vit.gin"], [*TINY, "VitSpec.mlp_dims=32"], workdir)
    message = str(error.value)
    assert "\n" not in message and "VitSpec.mlp_dims=" in message and "not 32" in message
    assert "another --workdir" in message and "remove" not in message
    assert _snapshot(workdir) == before


@pytest.mark.slow
def test_rerunning_a_finished_run_leaves_it_as_it_was(trained, tmp_path, capsys):
    workdir = _copy(trained, tmp_path)
    before = _snapshot(workdir)
    payload = launch.train(["gin/cpu/vit.gin"], TINY, workdir)
    assert "has finished training" in capsys.readouterr().out
    assert payload["train"]["steps"] == 2
    assert _snapshot(workdir) == before


@pytest.mark.slow
def test_a_longer_run_resumes_and_counts_the_time_of_every_attempt(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    first = launch.train(["gin/cpu/vit.gin"], TINY, workdir)  # finished: its results
    payload = launch.train(["gin/cpu/vit.gin"], [*TINY, "TrainSpec.num_steps=3"], workdir)
    attempts = payload["attempts"]
    assert [(a["from_step"], a["to_step"]) for a in attempts] == [(0, 2), (2, 3)]
    assert payload["train"]["resumed_from_step"] == 2
    assert payload["train"]["wall_seconds"] == pytest.approx(
        sum(a["wall_seconds"] for a in attempts)
    )
    assert payload["train"]["wall_seconds"] > first["train"]["wall_seconds"]
    assert payload["train"]["images_per_second"] > 0
    for name in ("results.json", "attempts.json", "experiment.json", "config.gin"):
        assert os.stat(os.path.join(workdir, name)).st_mode & 0o777 == 0o644, name


@pytest.mark.slow
def test_a_second_process_on_the_workdir_is_refused(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    with workdir_lock.locked(workdir):
        before = _snapshot(workdir)
        with pytest.raises(UsageError, match=r"in use by another harness\.run"):
            launch.train(["gin/cpu/vit.gin"], [*TINY, "TrainSpec.num_steps=3"], workdir)
        assert _snapshot(workdir) == before


@pytest.mark.slow
def test_a_refused_resume_of_a_damaged_checkpoint_leaves_the_workdir_as_it_was(trained, tmp_path):
    """The latest checkpoint is restored before the config, experiment.json or a new attempt
    is recorded, so refusing it changes nothing (it used to rewrite experiment.json and leave
    an attempt marked 'running')."""
    workdir = _copy(trained, tmp_path)
    os.remove(os.path.join(workdir, "results.json"))  # so the run is not taken as finished
    _flip_a_byte(_largest_file(os.path.join(workdir, CHECKPOINT_DIR, "2", "default")))
    before = _snapshot(workdir)
    with pytest.raises(UsageError, match="cannot be restored"):
        launch.train(["gin/cpu/vit.gin"], [*TINY, "TrainSpec.num_steps=3"], workdir)
    assert _snapshot(workdir) == before


@pytest.mark.slow
def test_damaged_checkpoint_bytes_are_named_with_the_way_back(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    _flip_a_byte(_largest_file(os.path.join(workdir, CHECKPOINT_DIR, "2", "default")))
    with pytest.raises(UsageError) as error:
        restore.load_trained(workdir)
    message = str(error.value)
    assert "\n" not in message and "does not match its checksum" in message
    assert "cannot be restored" in message and "to resume from step 1" in message


# --- The lock --------------------------------------------------------------------------------


def test_the_lock_refuses_a_second_holder_and_is_released_on_exit(tmp_path):
    with workdir_lock.locked(str(tmp_path)):
        with pytest.raises(UsageError) as error, workdir_lock.locked(str(tmp_path)):
            pass
        assert "\n" not in str(error.value) and str(tmp_path) in str(error.value)
    with workdir_lock.locked(str(tmp_path)):
        pass


def test_the_lock_of_a_killed_process_is_released(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from harness.run_dir import lock as workdir_lock\n"
            f"with workdir_lock.locked({str(tmp_path)!r}):\n"
            "    print('locked', flush=True); time.sleep(600)",
        ],
        cwd=gin_config.REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UsageError), workdir_lock.locked(str(tmp_path)):
            pass
    finally:
        holder.kill()
        holder.wait()
    with workdir_lock.locked(str(tmp_path)):
        pass


# --- Checkpoints -----------------------------------------------------------------------------


def _state(value: float) -> dict[str, jax.Array]:
    return {"w": jnp.full((64,), value, jnp.float32), "step": jnp.asarray(3, jnp.int32)}


def _abstract(state):
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return checkpointing.abstract_like(state, jax.tree_util.tree_map(lambda _: sharding, state))


def test_checkpoint_round_trip_writes_and_verifies_checksums(tmp_path):
    checkpointer = Checkpointer(str(tmp_path), keep=2)
    checkpointer.save(1, _state(0.5))
    assert os.path.isfile(os.path.join(checkpointer.step_dir(1), "checksums.sha256.json"))
    restored = Checkpointer(str(tmp_path), keep=2, writes=False).restore(1, _abstract(_state(0)))
    np.testing.assert_array_equal(restored["w"], np.full((64,), 0.5, np.float32))


def test_a_checkpoint_with_damaged_bytes_is_refused(tmp_path):
    checkpointer = Checkpointer(str(tmp_path), keep=3)
    checkpointer.save(1, _state(0.5))
    checkpointer.save(2, _state(0.25))
    _flip_a_byte(_largest_file(os.path.join(checkpointer.step_dir(2), "default")))
    with pytest.raises(UsageError) as error:
        checkpointer.restore(2, _abstract(_state(0)))
    message = str(error.value)
    assert "does not match its checksum" in message and "to resume from step 1" in message


def test_a_checkpoint_with_weights_that_are_not_finite_is_refused(tmp_path):
    checkpointer = Checkpointer(str(tmp_path), keep=3)
    checkpointer.save(1, _state(float("nan")))
    with pytest.raises(UsageError, match=r"\['w'\] holds values that are not finite"):
        checkpointer.restore(1, _abstract(_state(0)))


def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    checkpointer = Checkpointer(str(tmp_path), keep=3)
    checkpointer.save(1, _state(0.5))
    unfinished = os.path.join(checkpointer.directory, "2.orbax-checkpoint-tmp-1700000000")

    def full_disk(manager, step, *args, **kwargs):
        os.makedirs(unfinished)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpointing.ocp.CheckpointManager, "save", full_disk)
    with pytest.raises(DiskFullError) as error:
        checkpointer.save(2, _state(0.25))
    message = str(error.value)
    assert "\n" not in message and checkpointer.directory in message and "is full" in message
    assert "the checkpoint of step 1 is kept" in message
    assert not os.path.exists(unfinished)
    assert sorted(os.listdir(checkpointer.directory)) == ["1"]


def test_unfinished_saves_of_killed_runs_are_removed_by_the_next_training_start(tmp_path):
    Checkpointer(str(tmp_path), keep=3).save(1, _state(0.5))
    orphan = tmp_path / CHECKPOINT_DIR / "2.orbax-checkpoint-tmp-1700000000"
    orphan.mkdir()
    Checkpointer(str(tmp_path), keep=3, writes=False)  # readers never modify a run
    assert orphan.is_dir()
    Checkpointer(str(tmp_path), keep=3)
    assert not orphan.exists()
    assert sorted(os.listdir(tmp_path / CHECKPOINT_DIR)) == ["1"]


# --- TensorBoard event files -----------------------------------------------------------------


def test_a_damaged_event_file_is_set_aside_never_rewritten(tmp_path, capsys):
    writer = metric_writers.SummaryWriter(str(tmp_path))
    for step in range(1, 41):
        writer.write_scalars(step, {"train/loss": 1.0 / step})
    writer.close()
    (name,) = os.listdir(tmp_path)
    _flip_a_byte(str(tmp_path / name))
    damaged = (tmp_path / name).read_bytes()

    events.discard_events(str(tmp_path), lambda event: event.step > 40)

    aside = [n for n in os.listdir(tmp_path) if n != name]
    assert len(aside) == 1 and "tfevents" not in aside[0]  # TensorBoard no longer reads it
    assert (tmp_path / aside[0]).read_bytes() == damaged
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and "damaged" in warning[0] and aside[0] in warning[0]
    steps = [step for step, _ in events.read_scalars(str(tmp_path))["train/loss"]]
    assert steps and steps == list(range(1, len(steps) + 1)) and len(steps) < 40


def test_an_event_file_cut_short_by_a_kill_loses_only_its_last_record(tmp_path, capsys):
    writer = metric_writers.SummaryWriter(str(tmp_path))
    for step in range(1, 11):
        writer.write_scalars(step, {"train/loss": 1.0 / step})
    writer.close()
    (name,) = os.listdir(tmp_path)
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[:-5])

    events.discard_events(str(tmp_path), lambda event: False)

    assert os.listdir(tmp_path) == [name] and capsys.readouterr().err == ""
    steps = [step for step, _ in events.read_scalars(str(tmp_path))["train/loss"]]
    assert steps == list(range(1, 10))


@pytest.mark.slow
def test_a_run_from_before_experiment_json_is_recorded_by_rerunning_its_config(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    os.remove(os.path.join(workdir, "experiment.json"))
    with pytest.raises(UsageError, match=r"no experiment\.json"):
        restore.load_trained(workdir)
    before = _snapshot(workdir)
    launch.train(["gin/cpu/vit.gin"], TINY, workdir)  # finished: only records the experiment
    after = _snapshot(workdir)
    assert set(after) - set(before) == {"experiment.json"}
    assert {name: after[name] for name in before} == before
    assert restore.load_trained(workdir).step == 2
