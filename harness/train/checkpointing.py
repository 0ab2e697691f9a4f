"""Atomic, resumable checkpoints of the train state with orbax.

orbax writes each step into a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous checkpoint as the latest one. Saves are synchronous:
when `save` returns, the step is on disk.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from harness.errors import UsageError, one_line

CHECKPOINT_DIR = "checkpoints"


class Checkpointer:
    """Keeps the newest `keep` checkpoints of a workdir and restores the latest one."""

    def __init__(self, workdir: str, keep: int) -> None:
        self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=False
            ),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any) -> None:
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
        self._manager.wait_until_finished()

    def restore(self, step: int, abstract_state: Any) -> Any:
        """Restores `step` into arrays laid out like `abstract_state` (ShapeDtypeStructs
        carrying shardings). A corrupt checkpoint raises UsageError naming it and the way out."""
        try:
            return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
        except Exception as error:  # orbax raises many types for damaged files
            earlier = [s for s in self.all_steps() if s < step]
            hint = (
                f"move it aside (e.g. mv {self.directory}/{step} {self.directory}/{step}.bad) "
                f"to resume from step {earlier[-1]}"
                if earlier
                else "remove it to start the run over"
            )
            raise UsageError(
                f"checkpoint {self.directory}/{step} cannot be restored ({one_line(error)[:200]}); "
                f"{hint}"
            ) from error

    def close(self) -> None:
        self._manager.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of `tree` placed with `shardings`, the target layout for restore."""
    return jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )
