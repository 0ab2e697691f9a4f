"""A run directory's weights for export: its model spec and one checkpoint's params, per block.

The run directory is data: the model comes from experiment.json (its config.gin is never
parsed, and one that imports code is refused), the params from the orbax checkpoint through
harness/checkpoint_formats/orbax_run.py, after checking the step's files against their checksums.
"""

import dataclasses

import numpy as np

from harness import storage
from harness.checkpoint_formats import orbax_run, tree_mapping
from harness.config.experiment_file import load_experiment
from harness.errors import UsageError, one_line
from harness.run_dir import checksums
from models import scan_layout
from models.specs import ModelSpec


@dataclasses.dataclass(frozen=True)
class RunWeights:
    """What an exporter needs: the model spec and its params as host arrays by our flat path
    ('encoder/x_layers_3/...'), scanned stacks already split into blocks."""

    run_dir: str
    spec: ModelSpec
    params: dict[str, np.ndarray]
    step: int


def read_spec(run_dir: str) -> ModelSpec:
    """The run's model spec from experiment.json alone (cheap: no checkpoint is read)."""
    return load_experiment(run_dir).model


def read_weights(run_dir: str, step: int | None = None) -> RunWeights:
    """The model spec and the params of checkpoint `step` (None: the latest)."""
    spec = read_spec(run_dir)
    step_dir, chosen = orbax_run.step_dir(run_dir, step)
    try:
        checksums.verify(storage.join(run_dir, orbax_run.CHECKPOINT_DIR, str(chosen)))
    except ValueError as error:
        raise UsageError(
            f"checkpoint {step_dir} is damaged ({one_line(error)}); export another --step"
        ) from error
    params, _ = orbax_run.read_params(run_dir, chosen)
    flat = {k: np.asarray(v) for k, v in tree_mapping.flat_paths(params).items()}
    return RunWeights(run_dir=run_dir, spec=spec, params=scan_layout.to_blocks(flat), step=chosen)
