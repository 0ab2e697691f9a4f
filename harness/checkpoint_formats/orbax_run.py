"""Our own run directories: RUN_DIR/checkpoints/STEP/default, an orbax StandardSave of the
trainer's TrainState {step, params, opt_state} (see harness/runtime/checkpointing.py).

Only the params are read, as host numpy arrays: the optimizer state can be twice their size
and evaluation needs none of it, and the caller places the params on its own mesh.
"""

import contextlib
from typing import Any

import numpy as np

from harness import storage
from harness.checkpoint_formats import tree_mapping
from harness.errors import UsageError, one_line
from harness.run_dir import checkpoint_steps, checksums, names
from models import scan_layout

# The trainer's layout (harness/run_dir/checkpoint_steps.py and orbax's item name).
CHECKPOINT_DIR = checkpoint_steps.CHECKPOINT_DIR
ITEM_DIR = names.CHECKPOINT_ITEM_DIR
PARAMS_KEY = "params"


def is_run_dir(path: str) -> bool:
    return storage.isdir(storage.join(path, CHECKPOINT_DIR))


def step_dir(run_dir: str, step: int | None) -> tuple[str, int]:
    """The item directory of `step` (None: the latest) and the step it is."""
    steps = checkpoint_steps.saved_steps(run_dir)
    if not steps:
        raise UsageError(
            f"{run_dir} has no checkpoint under {CHECKPOINT_DIR}/; give a run directory that "
            "saved one (train.checkpoint_every_steps)"
        )
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise UsageError(f"{run_dir} has no checkpoint of step {step}; it has steps {steps}")
    return storage.join(run_dir, CHECKPOINT_DIR, str(step), ITEM_DIR), step


def read_params(run_dir: str, step: int | None = None) -> tuple[dict[str, Any], int]:
    """(params as a nested dict of numpy arrays, the step they are from)."""
    import orbax.checkpoint as ocp  # heavy; only this format needs it

    # orbax refuses relative paths; a user's `--checkpoint=runs/vit` is one.
    directory, step = step_dir(storage.absolute(run_dir), step)
    checkpointer = ocp.PyTreeCheckpointer()
    try:
        # The checksums training wrote: orbax reads a flipped byte in an array chunk silently.
        checksums.verify(storage.join(run_dir, CHECKPOINT_DIR, str(step)))
        with _readable(directory) as local:
            return _read_params(checkpointer, local), step
    except Exception as error:  # orbax raises many types for damaged or foreign directories
        raise UsageError(
            f"checkpoint {directory} cannot be read ({one_line(error)[:200]}); give a run "
            "directory written by harness.run"
        ) from error


def _readable(directory: str) -> Any:
    """`directory` where orbax reads it itself (local, gs://), else a local download of it
    (orbax cannot read other schemes: harness/storage.py `orbax_writes`)."""
    if storage.orbax_writes(directory):
        return contextlib.nullcontext(directory)
    return storage.local_copy(directory)


def _read_params(checkpointer: Any, directory: str) -> dict[str, Any]:
    import orbax.checkpoint as ocp

    metadata = checkpointer.metadata(directory)
    if PARAMS_KEY not in metadata:
        raise ValueError(f"it holds {sorted(metadata)}, no {PARAMS_KEY!r}")
    params_metadata = metadata[PARAMS_KEY]
    to_numpy = ocp.RestoreArgs(restore_type=np.ndarray)
    as_numpy = {PARAMS_KEY: _tree_map(lambda _: to_numpy, params_metadata)}
    # transforms={} restores only the subtree named in `item`: the params, not opt_state.
    restored = checkpointer.restore(
        directory,
        args=ocp.args.PyTreeRestore(
            item={PARAMS_KEY: params_metadata}, restore_args=as_numpy, transforms={}
        ),
    )
    return restored[PARAMS_KEY]


def _tree_map(fn: Any, tree: Any) -> Any:
    """Maps over the leaves of a nested dict (orbax metadata leaves are not JAX leaves)."""
    if isinstance(tree, dict):
        return {k: _tree_map(fn, v) for k, v in tree.items()}
    return fn(tree)


def convert(run_dir: str, step: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors by our per-block param path, our path -> checkpoint name): our names are
    already ours; a scanned run's stacks are split into blocks (models/scan_layout.py)."""
    params, _ = read_params(run_dir, step)
    return scan_layout.to_blocks(tree_mapping.flat_paths(params)), {}
