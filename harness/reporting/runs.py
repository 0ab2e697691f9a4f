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
from harness.run_dir import bounded, events, results_schema
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
    """Reads a run directory; returns None (with one warning) when it is incomplete or corrupt.
    A malformed optional part (sweep.json, the routing or energy section, the curves) is
    dropped with one warning and the rest of the run is shown (results_schema.py)."""
    name = os.path.basename(os.path.normpath(path))
    results_path = storage.join(path, RESULTS_FILE)
    try:
        payload = bounded.read_json_object(results_path)
        results_schema.check_results(payload)
    except FileNotFoundError:
        warn(f"skipping {path}: no {RESULTS_FILE} (unfinished run?)")
        return None
    except (bounded.UnreadableFile, results_schema.Malformed) as error:
        warn(f"skipping {path}: {RESULTS_FILE} is corrupt or incomplete ({error})")
        return None
    except OSError as error:
        warn(f"skipping {path}: {RESULTS_FILE} cannot be read ({error.strerror or error})")
        return None
    for section in ("energy", "routing", "train.images_per_second"):
        problem = results_schema.optional_problem(payload, section)
        if problem is not None:
            warn(f"ignoring {results_path}'s {section}: it {problem}")
            if section == "train.images_per_second":
                payload["train"]["images_per_second"] = None
            else:
                del payload[section]
    sweep = None
    sweep_path = storage.join(path, SWEEP_FILE)
    if storage.exists(sweep_path):
        try:
            sweep = bounded.read_json_object(sweep_path)
            results_schema.check_sweep(sweep)
        except (bounded.UnreadableFile, results_schema.Malformed) as error:
            warn(f"ignoring {sweep_path}: corrupt or incomplete ({error})")
            sweep = None
    try:
        scalars = events.read_scalars(path)
    except Exception as error:  # a damaged event file costs the curves, not the report
        warn(f"no training curves for {path}: {error}")
        scalars = {}
    return Run(name=name, path=path, results=payload, sweep=sweep, scalars=scalars)


def footprint_of(run: Run) -> carbon.Footprint:
    return carbon.run_footprint(run.results["train"]["wall_seconds"], run.results["run"]["devices"])
