"""A trained run, rebuilt from its run directory with its latest weights restored."""

import dataclasses
import os
from typing import Any

import jax

from harness import gin_config
from harness.errors import UsageError
from harness.train.checkpointing import Checkpointer
from harness.train.experiment import Experiment, validate
from harness.train.launch import CONFIG_FILE


@dataclasses.dataclass
class TrainedRun:
    """A finished (or checkpointed) run: its trainer (model, mesh, evaluator) and weights."""

    run_dir: str
    trainer: Any
    params: Any
    step: int


def load_trained(run_dir: str) -> TrainedRun:
    """Rebuilds the run's trainer from RUN_DIR/config.gin and restores its latest weights."""
    from harness.train import trainer as trainer_lib  # heavy import, only when loading

    config_path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise UsageError(
            f"{run_dir} is not a run directory (no {CONFIG_FILE}); pass a --workdir of harness.run"
        )
    gin_config.parse_gin([config_path], [])
    experiment = Experiment.from_gin()
    mesh_shape = validate(experiment, jax.device_count())
    trainer = trainer_lib.Trainer(experiment, run_dir, mesh_shape)
    checkpointer = Checkpointer(run_dir, keep=experiment.train.keep_checkpoints)
    step = checkpointer.latest_step()
    if step is None:
        raise UsageError(f"{run_dir} has no checkpoint; train it with python -m harness.run first")
    state = checkpointer.restore(step, trainer.abstract_state())
    checkpointer.close()
    return TrainedRun(run_dir=run_dir, trainer=trainer, params=state.params, step=step)
