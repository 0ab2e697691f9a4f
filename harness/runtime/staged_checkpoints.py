"""Checkpoints on URLs orbax cannot write itself (any scheme but gs://: ram://, hdfs://, ...).

orbax 0.5.9 writes arrays with tensorstore, which it points at the local 'file' driver for
every path but gs://, so an s3:// or ram:// checkpoint would land in a local folder named after
the scheme (harness/storage.py `orbax_writes`). Here orbax saves each step into a local
temporary folder, exactly as a local run lays it out, which is then copied through
tf.io.gfile into WORKDIR/checkpoints/<step>, COMMIT_FILE last, as orbax marks its own saves on
gs:// (harness/run_dir/checkpoint_steps.py); a restore downloads the step and lets orbax read it.
The local folder holds one step at a time, so the disk needs room for one checkpoint.

Only one process may write this way: in a multi-host run each process's tensorstore writes
its own shards into its own local folder, which the chief's upload would not see.
"""

import os
import tempfile
from typing import Any

import jax
import orbax.checkpoint as ocp

from harness import storage
from harness.errors import UsageError
from harness.run_dir import checkpoint_steps


class StagedManager:
    """The part of orbax's CheckpointManager that harness/runtime/checkpointing.py uses, for a
    checkpoint directory on a URL: the newest `keep` steps are kept (None: all)."""

    def __init__(self, directory: str, keep: int | None, writes: bool) -> None:
        if jax.process_count() > 1:
            raise UsageError(
                f"{directory}: checkpoints on this scheme go through a local copy, which only "
                "a single process can make; use a gs:// or shared local workdir for multi-host"
            )
        self.directory = directory
        self.keep = keep
        if writes:
            storage.makedirs(directory)

    def all_steps(self) -> list[int]:
        return checkpoint_steps.steps_in(self.directory)

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def save(self, step: int, args: Any, force: bool = True) -> None:
        del force  # every save is forced, as Checkpointer asks
        target = storage.join(self.directory, str(step))
        with tempfile.TemporaryDirectory(prefix="harness-checkpoint-") as local:
            manager = ocp.CheckpointManager(local, options=_options(create=True))
            manager.save(step, args=args, force=True)
            manager.wait_until_finished()
            manager.close()
            storage.rmtree(target)  # an upload an earlier, killed attempt left unfinished
            storage.copy_tree(storage.join(local, str(step)), target)
        storage.write_url(
            storage.join(target, checkpoint_steps.COMMIT_FILE), f"step {step} uploaded whole\n"
        )
        steps = self.all_steps()
        if self.keep is not None:
            for old in steps[: max(len(steps) - self.keep, 0)]:
                storage.rmtree(storage.join(self.directory, str(old)))

    def wait_until_finished(self) -> None:
        """Saves are synchronous (the upload has finished when save returns)."""

    def restore(self, step: int, args: Any) -> Any:
        with storage.local_copy(storage.join(self.directory, str(step))) as local_step:
            parent = os.path.dirname(local_step)  # a temporary folder holding only the step
            manager = ocp.CheckpointManager(parent, options=_options(create=False))
            try:
                return manager.restore(step, args=args)
            finally:
                manager.close()

    def close(self) -> None:
        """Nothing stays open between saves."""


def _options(create: bool) -> ocp.CheckpointManagerOptions:
    return ocp.CheckpointManagerOptions(
        create=create, read_only=not create, enable_async_checkpointing=False
    )
