"""Atomic, verified, resumable checkpoints of the train state with orbax.

orbax writes each step into a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous checkpoint as the latest one (and the next training start
removes the temporary directory it left). Saves are synchronous: when `save` returns, the step
is on disk, with the checksums of its files beside it, which `restore` verifies; restored
weights must also be finite, since a diverged run is never saved.

A workdir on a URL keeps its checkpoints there: orbax writes gs:// itself (etils.epath through
tf.io.gfile for its files, tensorstore's gcs driver for the arrays; no rename, a commit marker
instead: harness/run_dir/checkpoint_steps.py), and any other scheme goes through a local copy
(harness/runtime/staged_checkpoints.py). The directory is never made absolute with os.path,
which would turn 'gs://b/run' into a local path.
"""

import errno
import shutil
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from harness import storage
from harness.checkpoint_formats import weight_checks
from harness.errors import UsageError, one_line
from harness.run_dir import checkpoint_steps, checksums, names
from harness.runtime.staged_checkpoints import StagedManager

CHECKPOINT_DIR = checkpoint_steps.CHECKPOINT_DIR
ITEM_DIR = names.CHECKPOINT_ITEM_DIR


class DiskFullError(UsageError):
    """The disk filled during a save; the previous checkpoint is kept."""


class Checkpointer:
    """Keeps the newest `keep` checkpoints of a workdir and restores the latest one.

    `writes`: a checkpointer that saves, and removes the unfinished saves of earlier, killed
    runs; False for readers (sweep, report), which never modify the run directory.
    """

    def __init__(self, workdir: str, keep: int, writes: bool = True) -> None:
        self.directory = storage.join(storage.absolute(workdir), CHECKPOINT_DIR)
        if not storage.orbax_writes(self.directory):
            self._manager: Any = StagedManager(self.directory, keep if writes else None, writes)
            return
        if writes and jax.process_index() == 0:
            checkpoint_steps.mark_copied(self.directory)  # before orbax cleans up "unfinished"
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep if writes else None,
                create=writes,
                cleanup_tmp_directories=writes,
                read_only=not writes,
                enable_async_checkpointing=False,
            ),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any) -> None:
        """Saves `step` and its checksums. A full disk raises DiskFullError (one line) after
        removing the unfinished save, so the previous checkpoint stays the latest."""
        try:
            self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
            self._manager.wait_until_finished()
            if jax.process_index() == 0:
                checksums.write(self.step_dir(step))
        except Exception as error:
            if not _out_of_space(error):
                raise
            self._remove_unfinished(step)
            kept = [s for s in self.all_steps() if storage.isdir(self.step_dir(s))]
            raise DiskFullError(
                f"the disk holding {self.directory} is full ({_free_mb(self.directory)} MB "
                f"free) while saving step {step}; "
                + (f"the checkpoint of step {kept[-1]} is kept; " if kept else "")
                + "free some space and run the same command to resume"
            ) from error

    def step_dir(self, step: int) -> str:
        return storage.join(self.directory, str(step))

    def _remove_unfinished(self, step: int) -> None:
        for path in storage.glob(storage.join(self.directory, f"{step}.orbax-checkpoint-tmp-*")):
            storage.rmtree(path)

    def restore(self, step: int, abstract_state: Any) -> Any:
        """Restores `step` into arrays laid out like `abstract_state` (ShapeDtypeStructs
        carrying shardings). A damaged checkpoint (unreadable, files that do not match their
        checksums, weights that are not finite) raises UsageError naming it and the way out,
        and so do weights whose recorded shapes differ from the model's."""
        try:
            checksums.verify(self.step_dir(step))
            recorded = self._recorded_shapes(step)
        except Exception as error:  # orbax raises many types for damaged files
            raise self._damaged(step, error) from error
        if recorded is not None:
            weight_checks.check_shapes(
                recorded,
                _shapes_by_path(abstract_state),
                self.step_dir(step),
                "the model of its run's experiment.json",
            )
        try:
            state = self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
            check_finite(state)
            return state
        except Exception as error:  # orbax raises many types for damaged files
            raise self._damaged(step, error) from error

    def _recorded_shapes(self, step: int) -> dict[str, tuple[int, ...]] | None:
        """Every saved array's shape as the checkpoint records it (its arrays' own
        metadata), by path; None where orbax does not read the directory itself (staged
        URLs)."""
        if not storage.orbax_writes(self.directory):
            return None
        item = storage.join(self.step_dir(step), ITEM_DIR)
        return _shapes_by_path(ocp.PyTreeCheckpointer().metadata(item))

    def _damaged(self, step: int, error: BaseException) -> UsageError:
        earlier = [s for s in self.all_steps() if s < step]
        hint = (
            f"move it aside (e.g. mv {self.directory}/{step} {self.directory}/{step}.bad) "
            f"to resume from step {earlier[-1]}"
            if earlier
            else "move it aside to start the run over"
        )
        return UsageError(
            f"checkpoint {self.directory}/{step} cannot be restored ({one_line(error)[:200]}); "
            f"{hint}"
        )

    def close(self) -> None:
        self._manager.close()


def _shapes_by_path(tree: Any) -> dict[str, tuple[int, ...]]:
    """{'params/encoder/.../w': shape} of a state or of orbax's metadata of it: orbax saves a
    dataclass's fields and a tuple's items as dict keys, so both spell a path alike."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(_key_name(k) for k in path): tuple(leaf.shape) for path, leaf in leaves}


def _key_name(key: Any) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def check_finite(state: Any) -> None:
    """Raises ValueError naming the first array with a NaN or infinity."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    for path, leaf in leaves:
        if jnp.issubdtype(leaf.dtype, jnp.inexact) and not bool(jnp.all(jnp.isfinite(leaf))):
            raise ValueError(f"{jax.tree_util.keystr(path)} holds values that are not finite")


def _out_of_space(error: BaseException | None) -> bool:
    """Whether `error`, or one it was raised from, says the disk (or quota) is full; orbax and
    tensorstore wrap the OSError, sometimes keeping only its text."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(error) or "Disk quota exceeded" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _free_mb(directory: str) -> int:
    if storage.is_url(directory):
        directory = tempfile.gettempdir()  # where a URL's save is staged (or orbax's caches)
    try:
        return shutil.disk_usage(directory).free // 2**20
    except OSError:
        return 0


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of `tree` placed with `shardings`, the target layout for restore."""
    return jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )
