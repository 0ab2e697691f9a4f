"""A finished run directory, read back as data: results.json, sweep.json and its curves.

Reading a run directory never executes anything from it (no gin, no pickles): everything here
is JSON and TensorBoard event protos.
"""

import dataclasses
import os
import sys
from typing import Any

from harness import storage
from harness.measure import carbon
from harness.run_dir import bounded, events
from harness.run_dir.run_record import RESULTS_FILE, SWEEP_FILE


@dataclasses.dataclass
class Run:
    name: str
    path: str
    results: dict[str, Any]
    sweep: dict[str, Any] | None
    scalars: dict[str, list[tuple[int, float]]]

    @property
    def family(self) -> str:
        return self.results["run"]["family"]

    @property
    def top1(self) -> float:
        return self.results["eval"]["eval/top1"]


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def load_run(path: str) -> Run | None:
    """Reads a run directory; returns None (with a warning) when it is incomplete or corrupt."""
    name = os.path.basename(os.path.normpath(path))
    results_path = storage.join(path, RESULTS_FILE)
    try:
        payload = bounded.read_json_object(results_path)
        for section, key in (("run", "family"), ("eval", "eval/top1"), ("model", "params_total")):
            payload[section][key]
    except FileNotFoundError:
        warn(f"skipping {path}: no {RESULTS_FILE} (unfinished run?)")
        return None
    except bounded.UnreadableFile as error:
        warn(f"skipping {path}: {RESULTS_FILE} is corrupt or incomplete ({error})")
        return None
    except (KeyError, TypeError) as error:
        warn(f"skipping {path}: {RESULTS_FILE} is corrupt or incomplete ({error!r})")
        return None
    sweep = None
    sweep_path = storage.join(path, SWEEP_FILE)
    if storage.exists(sweep_path):
        try:
            sweep = bounded.read_json_object(sweep_path)
        except bounded.UnreadableFile as error:
            warn(f"ignoring {sweep_path}: corrupt ({error})")
    try:
        scalars = events.read_scalars(path)
    except Exception as error:  # a damaged event file costs the curves, not the report
        warn(f"no training curves for {path}: {error!r}")
        scalars = {}
    return Run(name=name, path=path, results=payload, sweep=sweep, scalars=scalars)


def footprint_of(run: Run) -> carbon.Footprint:
    return carbon.run_footprint(run.results["train"]["wall_seconds"], run.results["run"]["devices"])
