r"""Inference-time routing sweeps of a trained sparse model, without retraining.

  python -m harness.sweep RUN_DIR [--capacities=2,1,0.5,0.25,0.125] [--ks=1,2]

Restores the run's latest checkpoint and evaluates the same weights with every combination of
eval capacity factor C, eval k and vanilla vs Batch Prioritized Routing, writing
RUN_DIR/sweep.json: test accuracy, dropped-token fraction, analytic GFLOPs per image and
inference time per batch for each point. The report reads it.
"""

import dataclasses
import os
import sys
from typing import Any

import jax
import numpy as np
from absl import app, flags, logging

from harness import config, measure, results, timing
from harness.checkpointing import Checkpointer
from harness.errors import UsageError, run_cli
from models import specs

FLAGS = flags.FLAGS
flags.DEFINE_list("capacities", ["2", "1", "0.5", "0.25", "0.125"], "Eval capacity factors C.")
flags.DEFINE_list("ks", ["1", "2"], "Eval numbers of selected experts k.")
flags.DEFINE_integer("timing_batch_size", 256, "Batch size of the per-point inference timing.")

SWEEP_FILE = "sweep.json"


@dataclasses.dataclass
class TrainedRun:
    """A finished (or checkpointed) run, rebuilt from its own config.gin."""

    run_dir: str
    trainer: Any
    params: Any
    step: int


def load_trained(run_dir: str) -> TrainedRun:
    """Rebuilds the run's trainer from RUN_DIR/config.gin and restores its latest weights."""
    from harness import trainer as trainer_lib  # heavy import, only when loading

    config_path = os.path.join(run_dir, "config.gin")
    if not os.path.isfile(config_path):
        raise UsageError(
            f"{run_dir} is not a run directory (no config.gin); pass a --workdir of harness.run"
        )
    config.parse_gin([config_path], [])
    experiment = trainer_lib.Experiment.from_gin()
    mesh_shape = trainer_lib.validate(experiment, jax.device_count())
    trainer = trainer_lib.Trainer(experiment, run_dir, mesh_shape)
    checkpointer = Checkpointer(run_dir, keep=experiment.train.keep_checkpoints)
    step = checkpointer.latest_step()
    if step is None:
        raise UsageError(f"{run_dir} has no checkpoint; train it with python -m harness.run first")
    state = checkpointer.restore(step, trainer.abstract_state())
    checkpointer.close()
    return TrainedRun(run_dir=run_dir, trainer=trainer, params=state.params, step=step)


def with_eval_routing(
    spec: specs.ModelSpec, k: int, capacity: float, batch_priority: bool
) -> specs.ModelSpec:
    moe = dataclasses.replace(
        spec.moe,
        eval_num_selected_experts=k,
        eval_capacity_factor=capacity,
        eval_batch_priority=batch_priority,
    )
    return dataclasses.replace(spec, moe=moe)


def sweep(
    run: TrainedRun, capacities: list[float], ks: list[int], timing_batch_size: int
) -> dict[str, Any]:
    """Evaluates every (routing, k, C) point; returns the sweep.json payload."""
    spec = run.trainer.experiment.model
    if not spec.is_sparse:
        raise UsageError(
            f"{run.run_dir} trains a {spec.family!r} model; sweeps need vmoe or widenet"
        )
    points = []
    method = ""
    for batch_priority in (False, True):
        for k in ks:
            for capacity in capacities:
                variant = with_eval_routing(spec, k, capacity, batch_priority)
                evaluation = run.trainer.make_evaluator(variant)(run.params)
                dropped = [
                    v for key, v in evaluation.metrics.items() if "/dropped_fraction/" in key
                ]
                forward = timing.jit_forward(run.trainer.model_for(variant), run.params)
                timed = timing.time_inference(
                    forward, run.trainer.image_shape, [timing_batch_size], warmup=2, repeats=5
                )[0]
                method = timed.describe_method()
                points.append(
                    {
                        "routing": "bpr" if batch_priority else "vanilla",
                        "k": k,
                        "capacity_factor": capacity,
                        "top1": evaluation.metrics["eval/top1"],
                        "dropped_fraction": float(np.mean(dropped)),
                        "gflops_per_image": measure.analytic_gflops_per_image(variant),
                        "ms_per_batch_p50": timed.p50_ms,
                        "timing_batch_size": timing_batch_size,
                    }
                )
                print(
                    f"{points[-1]['routing']:>7} k={k} C={capacity:<6} top-1 "
                    f"{points[-1]['top1']:.4f} dropped {points[-1]['dropped_fraction']:.3f}",
                    flush=True,
                )
    return {
        "run_dir": os.path.abspath(run.run_dir),
        "checkpoint_step": run.step,
        "trained_routing": {
            "k": spec.moe.num_selected_experts,
            "capacity_factor": spec.moe.capacity_factor,
            "batch_priority": spec.moe.batch_priority,
        },
        "points": points,
        "timing_method": method,
        "devices": results.devices(),
        "command": "python -m harness.sweep " + " ".join(sys.argv[1:]),
    }


def main(argv: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)  # praxis logs every parameter at INFO
    if len(argv) != 2:
        raise UsageError("pass exactly one RUN_DIR, e.g. python -m harness.sweep runs/vmoe")
    try:
        capacities = [float(c) for c in FLAGS.capacities]
        ks = [int(k) for k in FLAGS.ks]
    except ValueError as error:
        raise UsageError(f"--capacities/--ks must be numbers ({error})") from error
    run = load_trained(argv[1])
    payload = sweep(run, capacities, ks, FLAGS.timing_batch_size)
    path = os.path.join(argv[1], SWEEP_FILE)
    results.write_json_atomically(path, payload)
    print(f"sweep: {path}")


if __name__ == "__main__":
    app.run(lambda argv: run_cli(lambda: main(argv)))
