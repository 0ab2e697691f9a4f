"""The cheapest way to train a config on N devices of one kind that fits their memory.

Every setting is tried: remat policy, micro-batches (powers of two, each a whole number of
routing groups), FSDP off and on, and every mesh (data, expert, model) of N devices whose
expert axis divides the experts and whose model axis divides the heads and MLP width. A
setting fits when its program plan (harness/measure/program_plan.py) is at most the device's
memory; the cheapest is the one with the shortest estimated step (harness/measure/
step_cost.py), then the fewest micro-batches, then FSDP off. Traces are cached per block
kind and micro-batch size, so the search costs a few traces per remat policy.
"""

import dataclasses
import itertools

from harness.measure import program_plan, step_cost
from harness.measure.plan_devices import PlanDevice
from models.specs import REMAT_POLICIES, ModelSpec

MODEL_AXES = (1, 2, 4, 8, 16)


@dataclasses.dataclass(frozen=True)
class Recommendation:
    plan: program_plan.ProgramPlan | None  # None: nothing fits
    step: step_cost.StepTime | None
    tried: int
    smallest: program_plan.ProgramPlan | None  # the least memory of all tried, for a miss


def meshes(spec: ModelSpec, devices: int) -> list[tuple[int, int, int]]:
    experts = spec.moe.num_experts if spec.is_sparse else 1
    found = []
    for expert in (e for e in range(1, experts + 1) if experts % e == 0):
        for model in MODEL_AXES:
            heads_split = spec.vit.num_heads % model == 0 and spec.vit.mlp_dims % model == 0
            if devices % (expert * model) == 0 and heads_split:
                found.append((devices // (expert * model), expert, model))
    return found


def microbatch_counts(spec: ModelSpec, per_device: int) -> list[int]:
    counts, n = [], 1
    while per_device % (n * spec.min_batch) == 0:
        counts.append(n)
        n *= 2
    return counts


def settings(spec: ModelSpec, devices: int, global_batch: int):
    for mesh, remat, fsdp in itertools.product(
        meshes(spec, devices), REMAT_POLICIES, (False, True)
    ):
        data, expert, _ = mesh
        if global_batch % (data * expert) or (fsdp and data == 1):
            continue
        for micro in microbatch_counts(spec, global_batch // (data * expert)):
            yield program_plan.Setting(mesh, remat, micro, fsdp)


def recommend(
    spec: ModelSpec,
    device: PlanDevice,
    devices: int,
    global_batch: int,
    compute_dtype: str = "bfloat16",
    loss: str = "softmax",
) -> Recommendation:
    best, best_key, smallest, tried = None, None, None, 0
    for setting in settings(spec, devices, global_batch):
        tried += 1
        plan = program_plan.plan(spec, setting, global_batch, compute_dtype, loss)
        if smallest is None or plan.total < smallest.total:
            smallest = plan
        if not plan.fits(device.memory_bytes):
            continue
        step = step_cost.step_time(spec, setting, global_batch, device, compute_dtype)
        key = (step.total_s, setting.microbatches, setting.fsdp)
        if best_key is None or key < best_key:
            best, best_key = (plan, step), key
    if tried == 0:
        raise ValueError(
            f"no mesh of --devices={devices} splits the batch of {global_batch} images into whole "
            f"routing groups of {spec.min_batch}; use a device count that divides the batch"
        )
    if best is None:
        return Recommendation(None, None, tried, smallest)
    return Recommendation(best[0], best[1], tried, smallest)
