"""A trained run, rebuilt from its run directory with its latest weights restored.

The experiment comes from RUN_DIR/experiment.json, read as data (harness/train/
experiment_file.py): a run directory never gets to execute anything, so its config.gin is not
parsed.
"""

import dataclasses
from typing import Any

import jax

from harness.config.experiment import validate
from harness.config.experiment_file import load_experiment
from harness.data import metadata
from harness.errors import UsageError, one_line
from harness.runtime.checkpointing import Checkpointer


@dataclasses.dataclass
class TrainedRun:
    """A finished (or checkpointed) run: its sharded model (model, mesh, evaluator) and
    weights."""

    run_dir: str
    sharded: Any  # harness.runtime.sharded_model.ShardedModel
    params: Any
    step: int


def load_trained(run_dir: str) -> TrainedRun:
    """Rebuilds the run's sharded model from RUN_DIR/experiment.json and restores its latest
    weights. Raises UsageError (one line) for anything but a readable, data-only run directory
    with a checkpoint."""
    from harness.runtime import sharded_model  # heavy import, only when loading

    experiment = load_experiment(run_dir)
    try:
        mesh_shape = validate(experiment, jax.device_count())
        sharded = sharded_model.ShardedModel(experiment, run_dir, mesh_shape)
    except metadata.DatasetNotFoundError as error:
        raise UsageError(str(error)) from error
    except ValueError as error:
        raise UsageError(f"{run_dir} cannot be loaded here: {one_line(error)}") from error
    checkpointer = Checkpointer(run_dir, keep=experiment.train.keep_checkpoints, writes=False)
    step = checkpointer.latest_step()
    if step is None:
        raise UsageError(f"{run_dir} has no checkpoint; train it with python -m harness.run first")
    state = checkpointer.restore(step, sharded.abstract_state())
    checkpointer.close()
    return TrainedRun(run_dir=run_dir, sharded=sharded, params=state.params, step=step)
