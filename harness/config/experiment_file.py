"""RUN_DIR/experiment.json: the resolved specs of a run, as data.

A run directory is data that people share, so reading one must never execute anything from
it. Its config.gin is gin, and gin can import and call any Python (`from __gin__ import
dynamic_registration`), so readers (sweep, report, the suite) rebuild the experiment from this
JSON with the spec dataclasses, which check every field, and never parse the gin file.
"""

import dataclasses
import re
import typing
from typing import Any

from harness import files, storage
from harness.config.experiment import Experiment
from harness.errors import UsageError, one_line
from harness.run_dir import bounded, names

EXPERIMENT_FILE = names.EXPERIMENT_FILE
CONFIG_FILE = names.CONFIG_FILE
# gin statements that import Python code: 'import x' and 'from __gin__ import ...'.
_GIN_IMPORT = re.compile(r"^\s*(import|from)\s+\S", re.MULTILINE)


def experiment_to_data(experiment: Experiment) -> dict[str, Any]:
    return dataclasses.asdict(experiment)


def write_experiment(run_dir: str, experiment: Experiment) -> None:
    files.write_json_atomically(
        storage.join(run_dir, EXPERIMENT_FILE), experiment_to_data(experiment)
    )


def read_experiment_data(run_dir: str) -> dict[str, Any] | None:
    """The stored experiment as plain JSON data, None when the run directory has none."""
    path = storage.join(run_dir, EXPERIMENT_FILE)
    if not storage.isfile(path):
        return None
    try:
        data = bounded.read_json(path)
    except OSError as error:
        raise UsageError(f"{path} cannot be read ({one_line(error)})") from error
    if not isinstance(data, dict):
        raise UsageError(f"{path} does not hold an experiment (a JSON object of specs)")
    return data


def load_experiment(run_dir: str) -> Experiment:
    """The run's experiment, rebuilt from RUN_DIR/experiment.json alone.

    Refuses (UsageError, one line) a run directory whose config.gin imports Python code, one
    without experiment.json, and a JSON value any spec rejects.
    """
    if not storage.isdir(run_dir):
        raise UsageError(f"{run_dir} is not a run directory; pass a --workdir of harness.run")
    refuse_code(run_dir)
    data = read_experiment_data(run_dir)
    if data is None:
        raise UsageError(
            f"{run_dir} has no {EXPERIMENT_FILE} (written by harness.run since run directories "
            "are read as data, never by running their config.gin); if you trust its gin, rerun "
            f"harness.run with it on --workdir={run_dir} to record one"
        )
    try:
        return spec_from_data(Experiment, data, "experiment")
    except (TypeError, ValueError) as error:
        path = storage.join(run_dir, EXPERIMENT_FILE)
        raise UsageError(f"{path} is not a valid experiment: {one_line(error)}") from error


def refuse_code(run_dir: str) -> None:
    """Refuses a run directory whose config.gin would import Python if it were parsed."""
    path = storage.join(run_dir, CONFIG_FILE)
    if not storage.isfile(path):
        return
    text = bounded.read_bytes(path, bounded.limit_for(path)).decode(errors="replace")
    found = _GIN_IMPORT.search(text)
    if found:
        line = found.group(0).strip()
        raise UsageError(
            f"refusing {run_dir}: its {CONFIG_FILE} imports Python code ({line!r}); a run "
            "directory is data and harness never executes anything from one"
        )


def spec_from_data(cls: type, data: Any, where: str) -> Any:
    """Builds dataclass `cls` from JSON `data`, nested specs included.

    Every field is passed explicitly (a missing one takes its declared default, never a gin
    binding of this process), so the spec's own checks see exactly the stored values.
    """
    if not isinstance(data, dict):
        raise TypeError(f"{where} must be a JSON object, not {type(data).__name__}")
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where} has unknown field {unknown[0]!r}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        if dataclasses.is_dataclass(hints[name]):
            value = spec_from_data(hints[name], data.get(name, {}), f"{where}.{name}")
        elif name in data:
            value = data[name]
        elif field.default is not dataclasses.MISSING:
            value = field.default
        else:
            raise ValueError(f"{where} lacks the field {name!r}")
        values[name] = value
    return cls(**values)
