"""Issue 26's data-loss cases: no command may delete or replace what a user made.

- `harness.evaluate` into another run's workdir must not prune that run's checkpoints;
- a `file://` workdir is a local path and is locked as one;
- an empty `--capacities`/`--ks` must not replace a sweep.json with no points;
- `-o` must never replace something that is not a regular file (a device, a FIFO, a link).
"""

import os
import shutil
import stat

import gin
import pytest

from harness import files
from harness.cli import sweep as sweep_cli
from harness.errors import UsageError
from harness.run_dir import lock as workdir_lock
from harness.train import evaluate_checkpoint as evaluate
from tests import run_dir_fixtures

# Four steps, a checkpoint every two: a run with more than one checkpoint to lose.
EXTRA = ("TrainSpec.num_steps=4", "TrainSpec.checkpoint_every_steps=2")
SHORT = [*run_dir_fixtures.TINY_VIT_BINDINGS, *EXTRA]


@pytest.fixture(scope="module")
def trained_vit(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("runs") / "vit")
    return run_dir_fixtures.train_tiny_vit(workdir, *EXTRA)


def _steps(workdir: str) -> list[str]:
    return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


@pytest.mark.slow
def test_evaluate_refuses_a_workdir_holding_another_runs_checkpoints(trained_vit, tmp_path):
    # A pre-empted run: checkpoints, no results.json yet. evaluate used to save its step 0
    # there with keep=1, which pruned the run's own steps.
    preempted = str(tmp_path / "preempted")
    shutil.copytree(trained_vit, preempted)
    os.remove(os.path.join(preempted, "results.json"))
    before = _steps(preempted)
    assert before == ["2", "4"]
    with pytest.raises(UsageError, match="holds checkpoints") as caught:
        try:
            evaluate.evaluate_checkpoint(["gin/cpu/vit.gin"], SHORT, trained_vit, preempted)
        finally:
            gin.clear_config()
    assert "\n" not in str(caught.value)
    assert _steps(preempted) == before


def test_evaluate_refuses_a_workdir_another_process_holds(tmp_path):
    # A run that is training holds the workdir lock; evaluate takes the same one.
    workdir = str(tmp_path / "training")
    os.makedirs(workdir)
    with workdir_lock.locked(workdir), pytest.raises(UsageError, match="in use"):
        try:
            evaluate.evaluate_checkpoint(["gin/cpu/vit.gin"], SHORT, "absent.npz", workdir)
        finally:
            gin.clear_config()


def test_a_file_url_workdir_is_locked_as_the_local_path(tmp_path):
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    with workdir_lock.locked(workdir), pytest.raises(UsageError, match="in use"):
        workdir_lock.locked("file://" + workdir).__enter__()


@pytest.mark.parametrize("flag", ["capacities", "ks"])
def test_an_empty_sweep_list_is_a_usage_error(flag):
    parse = sweep_cli.parse_capacities if flag == "capacities" else sweep_cli.parse_ks
    with pytest.raises(UsageError, match=f"--{flag}"):
        parse([])


@pytest.mark.parametrize("kind", ["device", "fifo", "symlink", "directory"])
def test_atomic_writes_never_replace_what_is_not_a_regular_file(tmp_path, kind):
    target = tmp_path / "target"
    if kind == "device":
        # A null device of our own: the unfixed code, run as root, replaced /dev/null itself.
        try:
            os.mknod(target, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("creating a device node needs root")
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "symlink":
        (tmp_path / "real.md").write_text("mine\n")
        os.symlink(tmp_path / "real.md", target)
    else:
        target.mkdir()
    before = os.lstat(target)
    with pytest.raises(UsageError, match="not a regular file") as caught:
        files.write_text_atomically(str(target), "report\n")
    assert "\n" not in str(caught.value)
    after = os.lstat(target)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert not [n for n in os.listdir(os.path.dirname(str(target))) if n.endswith(".tmp")]
    if kind == "symlink":
        assert (tmp_path / "real.md").read_text() == "mine\n"


def test_atomic_writes_replace_a_regular_file_and_create_a_new_one(tmp_path):
    existing = tmp_path / "old.md"
    existing.write_text("old\n")
    files.write_text_atomically(str(existing), "new\n")
    files.write_text_atomically(str(tmp_path / "fresh.md"), "fresh\n")
    assert existing.read_text() == "new\n"
    assert (tmp_path / "fresh.md").read_text() == "fresh\n"


def test_report_refuses_an_output_that_is_not_a_regular_file_before_any_work(tmp_path):
    from harness.reporting import report

    os.symlink("/dev/null", tmp_path / "null.md")
    with pytest.raises(UsageError, match="not a regular file"):
        report.check_output(str(tmp_path / "null.md"))
    assert os.path.islink(tmp_path / "null.md")
