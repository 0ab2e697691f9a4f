"""Our own run directories: RUN_DIR/checkpoints/STEP/default, an orbax StandardSave of the
trainer's TrainState {step, params, opt_state} (see harness/train/checkpointing.py).

Only the params are read, as host numpy arrays: the optimizer state can be twice their size
and evaluation needs none of it, and the caller places the params on its own mesh.
"""

from typing import Any

import numpy as np

from harness.errors import UsageError, one_line
from harness.imports import files, tree_mapping

# The trainer's layout (harness/train/checkpointing.py CHECKPOINT_DIR and orbax's item name);
# spelled out here so reading a run does not import the trainer.
CHECKPOINT_DIR = "checkpoints"
ITEM_DIR = "default"
PARAMS_KEY = "params"


def is_run_dir(path: str) -> bool:
    return files.is_dir(files.join(path, CHECKPOINT_DIR))


def saved_steps(run_dir: str) -> list[int]:
    """Steps with a complete checkpoint; orbax's unfinished saves have non-numeric names."""
    directory = files.join(run_dir, CHECKPOINT_DIR)
    if not files.is_dir(directory):
        return []
    return sorted(int(name) for name in files.list_dir(directory) if name.isdigit())


def step_dir(run_dir: str, step: int | None) -> tuple[str, int]:
    """The item directory of `step` (None: the latest) and the step it is."""
    steps = saved_steps(run_dir)
    if not steps:
        raise UsageError(
            f"{run_dir} has no checkpoint under {CHECKPOINT_DIR}/; give a run directory that "
            "saved one (train.checkpoint_every_steps)"
        )
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise UsageError(f"{run_dir} has no checkpoint of step {step}; it has steps {steps}")
    return files.join(run_dir, CHECKPOINT_DIR, str(step), ITEM_DIR), step


def read_params(run_dir: str, step: int | None = None) -> tuple[dict[str, Any], int]:
    """(params as a nested dict of numpy arrays, the step they are from)."""
    import orbax.checkpoint as ocp  # heavy; only this format needs it

    directory, step = step_dir(run_dir, step)
    checkpointer = ocp.PyTreeCheckpointer()
    try:
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
    except Exception as error:  # orbax raises many types for damaged or foreign directories
        raise UsageError(
            f"checkpoint {directory} cannot be read ({one_line(error)[:200]}); give a run "
            "directory written by harness.run"
        ) from error
    return restored[PARAMS_KEY], step


def _tree_map(fn: Any, tree: Any) -> Any:
    """Maps over the leaves of a nested dict (orbax metadata leaves are not JAX leaves)."""
    if isinstance(tree, dict):
        return {k: _tree_map(fn, v) for k, v in tree.items()}
    return fn(tree)


def convert(run_dir: str, step: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors by our param path, our path -> checkpoint name): our names are already ours."""
    params, _ = read_params(run_dir, step)
    return tree_mapping.flat_paths(params), {}
