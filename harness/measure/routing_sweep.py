"""Inference-time routing sweeps: one trained sparse model evaluated at other k, C and
vanilla vs Batch Prioritized Routing, on the same weights (no retraining).

Each point records test top-1, the dropped-assignment fraction, analytic GFLOPs per image and
the inference time per batch; `python -m harness.sweep` writes them to RUN_DIR/sweep.json.
"""

import dataclasses
import sys
from typing import Any

import numpy as np

from harness import storage
from harness.errors import UsageError
from harness.measure import inference, params_flops
from harness.run_dir import run_record
from harness.runtime.restore import TrainedRun
from models.moe.router_registry import ROUTERS
from models.specs import ModelSpec


def with_eval_routing(spec: ModelSpec, k: int, capacity: float, batch_priority: bool) -> ModelSpec:
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
    spec = run.sharded.experiment.model
    if not spec.is_sparse:
        raise UsageError(
            f"{run.run_dir} trains a {spec.family!r} model; sweeps need vmoe or widenet"
        )
    experts = spec.moe.num_experts
    if any(k > experts for k in ks):
        raise UsageError(f"k={max(ks)} exceeds the run's E={experts} experts; sweep k <= {experts}")
    uses = ROUTERS[spec.moe.router].uses
    if "capacity_factor" not in uses:
        raise UsageError(
            f"{run.run_dir} routes with {spec.moe.router!r}, which has no k, C or BPR to sweep; "
            "sweep a top_k or expert_choice model"
        )
    if timing_batch_size % spec.min_batch:
        raise UsageError(
            f"timing batch {timing_batch_size} is not a multiple of the model's routing group "
            f"(MoeSpec.group_images={spec.moe.group_images}); use a multiple of it"
        )
    # Batch Prioritized Routing orders the tokens that choose experts; when experts choose
    # tokens there is nothing to prioritise, and such a router does not use batch_priority.
    orders = (False, True) if "batch_priority" in uses else (False,)
    points = []
    method = ""
    for batch_priority in orders:
        for k in ks:
            for capacity in capacities:
                variant = with_eval_routing(spec, k, capacity, batch_priority)
                evaluation = run.sharded.make_evaluator(variant)(run.params)
                dropped = [
                    v for key, v in evaluation.metrics.items() if "/dropped_fraction/" in key
                ]
                forward = inference.jit_forward(run.sharded.model_for(variant), run.params)
                timed = inference.time_inference(
                    forward, run.sharded.image_shape, [timing_batch_size], warmup=2, repeats=5
                )[0]
                method = timed.describe_method()
                points.append(
                    {
                        "routing": "bpr" if batch_priority else "vanilla",
                        "k": k,
                        "capacity_factor": capacity,
                        "top1": evaluation.metrics["eval/top1"],
                        "dropped_fraction": float(np.mean(dropped)),
                        "gflops_per_image": params_flops.analytic_gflops_per_image(variant),
                        "ms_per_batch_p50": timed.p50_ms,
                        "timing_batch_size": timing_batch_size,
                        "per_image_processed": evaluation.per_image_processed,
                    }
                )
                print(
                    f"{points[-1]['routing']:>7} k={k} C={capacity:<6} top-1 "
                    f"{points[-1]['top1']:.4f} dropped {points[-1]['dropped_fraction']:.3f}",
                    flush=True,
                )
    return {
        "run_dir": storage.absolute(run.run_dir),
        "checkpoint_step": run.step,
        "trained_routing": {
            "k": spec.moe.num_selected_experts,
            "capacity_factor": spec.moe.capacity_factor,
            "batch_priority": spec.moe.batch_priority,
            "group_images": spec.moe.group_images,
            "router": spec.moe.router,
        },
        "points": points,
        "timing_method": method,
        "devices": run_record.devices(),
        "command": "python -m harness.sweep " + " ".join(sys.argv[1:]),
    }
