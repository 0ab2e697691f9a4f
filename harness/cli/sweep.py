r"""Inference-time routing sweeps of a trained sparse model, without retraining.

  python -m harness.sweep RUN_DIR [--capacities=2,1,0.5,0.25,0.125] [--ks=1,2]

Restores the run's latest checkpoint and evaluates the same weights with every combination of
eval capacity factor C, eval k and vanilla vs Batch Prioritized Routing, writing
RUN_DIR/sweep.json: test accuracy, dropped-token fraction, analytic GFLOPs per image and
inference time per batch for each point. The report reads it.
"""

import math

from absl import flags

from harness import limits
from harness.cli import app, preflight
from harness.cli import flags as cli_flags
from harness.errors import UsageError

FLAGS = flags.FLAGS
cli_flags.define_data_dir_flag()
flags.adopt_module_key_flags(cli_flags)
flags.DEFINE_list("capacities", ["2", "1", "0.5", "0.25", "0.125"], "Eval capacity factors C.")
flags.DEFINE_list("ks", ["1", "2"], "Eval numbers of selected experts k.")
flags.DEFINE_integer(
    "timing_batch_size", 256, "Batch size of the per-point inference timing.", lower_bound=1
)


def parse_capacities(values: list[str]) -> list[float]:
    if not values:  # a sweep of no points would replace a good sweep.json with nothing
        raise UsageError("--capacities is empty; give at least one C, e.g. --capacities=1,0.5")
    try:
        capacities = [float(c) for c in values]
    except ValueError as error:
        raise UsageError(
            f"--capacities={','.join(values)} must be numbers, e.g. 2,1,0.5"
        ) from error
    for c in capacities:
        if not (math.isfinite(c) and c > 0):
            raise UsageError(f"--capacities contains C={c}; every C must be finite and > 0")
    return capacities


def parse_ks(values: list[str]) -> list[int]:
    if not values:
        raise UsageError("--ks is empty; give at least one k, e.g. --ks=1,2")
    try:
        ks = [int(k) for k in values]
    except ValueError as error:
        raise UsageError(f"--ks={','.join(values)} must be integers, e.g. 1,2") from error
    for k in ks:
        if k < 1:
            raise UsageError(f"--ks contains k={k}; every k must be >= 1 (and <= the experts)")
    return ks


def main(args: list[str]) -> None:
    if len(args) != 1:
        raise UsageError("pass exactly one RUN_DIR, e.g. python -m harness.sweep runs/vmoe")
    run_dir = args[0]
    capacities, ks = parse_capacities(FLAGS.capacities), parse_ks(FLAGS.ks)
    limits.check_at_most(
        "timing_batch_size",
        FLAGS.timing_batch_size,
        limits.MAX_TIMING_BATCH,
        "images one timed inference call may allocate",
    )
    preflight.trained_run_dir(run_dir, FLAGS.data_dir)
    from harness import files, storage
    from harness.measure import routing_sweep
    from harness.run_dir import run_record
    from harness.runtime import restore

    run = restore.load_trained(run_dir, FLAGS.data_dir)
    payload = routing_sweep.sweep(run, capacities, ks, FLAGS.timing_batch_size)
    path = storage.join(run_dir, run_record.SWEEP_FILE)
    files.write_json_atomically(path, payload)
    print(f"sweep: {path}")


if __name__ == "__main__":
    app.run(main)
