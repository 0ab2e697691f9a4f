"""A trained run, rebuilt from its run directory with its latest weights restored.

The experiment comes from RUN_DIR/experiment.json, read as data (harness/train/
experiment_file.py): a run directory never gets to execute anything, so its config.gin is not
parsed.
"""

import dataclasses
from typing import Any

import jax

from harness import storage
from harness.config.experiment import validate
from harness.config.experiment_file import EXPERIMENT_FILE, load_experiment
from harness.data import metadata
from harness.errors import UsageError, one_line
from harness.run_dir import data_sources
from harness.runtime.checkpointing import Checkpointer


@dataclasses.dataclass
class TrainedRun:
    """A finished (or checkpointed) run: its sharded model (model, mesh, evaluator) and
    weights."""

    run_dir: str
    sharded: Any  # harness.runtime.sharded_model.ShardedModel
    params: Any
    step: int


def load_trained(run_dir: str, data_dir: str | None = None, *, own_run: bool = False) -> TrainedRun:
    """Rebuilds the run's sharded model from RUN_DIR/experiment.json and restores its latest
    weights. Raises UsageError (one line) for anything but a readable, data-only run directory
    with a checkpoint. The run's data is read through data_sources.for_reading: `data_dir` is
    the user's --data_dir; `own_run` (the suite, reading runs it trained from the user's gin)
    keeps the recorded data_dir."""
    from harness.runtime import sharded_model  # heavy import, only when loading

    experiment = load_experiment(run_dir)
    if not own_run:
        where = storage.join(run_dir, EXPERIMENT_FILE)
        data = data_sources.for_reading(experiment.data, where, data_dir)
        experiment = dataclasses.replace(experiment, data=data)
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
