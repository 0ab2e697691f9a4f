"""Whether a config may resume the run already in a workdir, and whether that run is done.

A workdir's checkpoints, events and results belong to one experiment. Resuming it with another
model, data, optimizer or seed would restore weights into other shapes (orbax cuts or pads
them without a word) or mix two experiments in one curve, so it is refused, naming the first
difference. What may change on resume is how long training goes on (TrainSpec.num_steps or
num_epochs: a longer run continues from the latest checkpoint; note the learning-rate schedule
follows the new length from there on), how often it logs, evaluates and saves, which OOD sets
it is evaluated on at the end, where the data lives and which split evaluates it, the mesh
(checkpoints restore onto any layout) and the number of gradient-accumulation micro-batches.
"""

import dataclasses
import json
from typing import Any

from harness import storage
from harness.config.experiment import Experiment
from harness.config.experiment_file import CONFIG_FILE, read_experiment_data, spec_from_data
from harness.errors import UsageError
from harness.run_dir import checkpoint_steps, run_record

MAY_CHANGE = frozenset(
    {
        "TrainSpec.num_steps",
        "TrainSpec.num_epochs",
        "TrainSpec.log_every_steps",
        "TrainSpec.eval_every_steps",
        # Few-shot probes only read the weights, so what they probe and how often may change.
        "TrainSpec.fewshot_every_steps",
        "FewShotSpec.datasets",
        "FewShotSpec.shots",
        "FewShotSpec.l2_regs",
        "FewShotSpec.seeds",
        "FewShotSpec.data_dir",
        "TrainSpec.checkpoint_every_steps",
        "TrainSpec.keep_checkpoints",
        "TrainSpec.profile_steps",
        "TrainSpec.eval_datasets",
        # Like the mesh, a memory knob: a run resumed on smaller devices may need more.
        "TrainSpec.microbatches",
        "MeshSpec.data",
        "MeshSpec.expert",
        "MeshSpec.model",
        "DataSpec.data_dir",
        "DataSpec.eval_split",
        "DataSpec.eval_batch_size",
        "DataSpec.cache",
    }
)


def named_values(spec: Any) -> dict[str, Any]:
    """{'VitSpec.mlp_dims': 3072, ...}: every leaf field, named as gin binds it."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(spec):
        value = getattr(spec, field.name)
        if dataclasses.is_dataclass(value):
            values.update(named_values(value))
        else:
            values[f"{type(spec).__name__}.{field.name}"] = value
    return values


def first_difference(stored: Experiment, new: Experiment) -> tuple[str, Any, Any] | None:
    """(name, stored value, new value) of the first field that may not change on resume."""
    before, after = named_values(stored), named_values(new)
    unused = _unused_sections(stored)
    for name, value in before.items():
        if name in MAY_CHANGE or name.split(".")[0] in unused:
            continue
        if after[name] != value:
            return name, value, after[name]
    return None


def _unused_sections(experiment: Experiment) -> set[str]:
    """Specs the run's model family ignores (a dense ViT has no MoE), whose fields may differ."""
    model = experiment.model
    unused = set()
    if not model.is_sparse:
        unused.add("MoeSpec")
    if model.family != "vit22b":
        unused.add("Vit22bSpec")
    return unused


def check_resumable(workdir: str, experiment: Experiment, config_text: str) -> None:
    """Refuses (UsageError, one line) to resume a workdir's checkpoints with another experiment.

    A workdir without a checkpoint holds nothing trained, so any config may (re)start in it.
    """
    if not checkpoint_steps.saved_steps(workdir):
        return
    stored_data = read_experiment_data(workdir)
    if stored_data is None:
        _check_config_text(workdir, config_text)
        return
    try:
        stored = spec_from_data(Experiment, stored_data, "experiment")
    except (TypeError, ValueError) as error:
        raise UsageError(
            f"--workdir={workdir} has checkpoints but its experiment.json is not valid ({error}); "
            "pass another --workdir"
        ) from error
    difference = first_difference(stored, experiment)
    if difference:
        name, old, new = difference
        raise UsageError(
            f"--workdir={workdir} holds a run trained with {name}={old!r}, not {new!r}; "
            "resuming would mix two experiments: pass another --workdir (or this workdir's "
            "own config to resume it)"
        )


def _check_config_text(workdir: str, config_text: str) -> None:
    """A workdir from before experiment.json: only its config text can be compared."""
    path = storage.join(workdir, CONFIG_FILE)
    if not storage.isfile(path):
        return
    if storage.read_text(path) != config_text:
        raise UsageError(
            f"--workdir={workdir} holds checkpoints of another config (its {CONFIG_FILE} "
            "differs from this one); pass another --workdir, or its own config to resume it"
        )


def finished_results(workdir: str, total_steps: int) -> dict[str, Any] | None:
    """The results.json payload when the workdir's run has already trained `total_steps`
    steps and recorded its results; None when there is training (or evaluation) left.

    Refuses a config that trains fewer steps than the workdir already has: its results would
    describe a model trained longer than the config says.
    """
    steps = checkpoint_steps.saved_steps(workdir)
    if not steps:
        return None
    if steps[-1] > total_steps:
        raise UsageError(
            f"--workdir={workdir} has trained {steps[-1]} steps but this config trains "
            f"{total_steps}; pass another --workdir for a shorter run"
        )
    try:
        results = json.loads(storage.read_text(storage.join(workdir, run_record.RESULTS_FILE)))
        recorded = results["train"]["steps"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no (readable) results yet: the final evaluation is still to do
    return results if recorded == total_steps == steps[-1] else None
