"""Step time, accelerator-days, energy and CO2 of a training run from FLOPs and collective bytes.

    compute      training FLOPs per device per step / (the device's peak x utilisation):
                 3 x the analytic forward FLOPs (harness/measure/params_flops.py) per image
                 of the device's batch, divided by the 'model' axis,
                 x 4/3 under remat 'full' (the backward pass re-runs the forward). Utilisation
                 is stated (default carbon_defaults.DEFAULT_UTILISATION).
    collectives  bytes each device sends per step / the device's stated interconnect bandwidth
                 (harness/measure/plan_devices.py), not overlapped with compute:
                 - gradient all-reduce (no FSDP): 2 x each weight's f32 gradient bytes, over
                   the devices that weight is replicated on;
                 - FSDP: per micro-batch, the weights all-gathered for the forward and again
                   for the backward, and the gradients reduce-scattered: 3 x f32 weight bytes,
                   then each shard's gradient all-reduced over its replicas outside 'data';
                 - expert all-to-all: per MoE layer and micro-batch, dispatch and combine in
                   the forward and both again in the backward (and in the recomputed forward
                   under remat 'full'), each the layer's expert buffers;
                 - 'model' axis: two all-reduces of the block's activations per block in the
                   forward, two in the backward (Megatron-style), more under recompute.
                 Each scaled by (n-1)/n for an axis of n devices.
Energy and CO2 use harness/measure/carbon.py's formula with the device's power row
(carbon_defaults), as the report's estimates do. All of it is an estimate.
"""

import dataclasses
import math

import jax

from harness.measure import carbon, params_flops, program_plan
from harness.measure.carbon_defaults import DEFAULT_GRID, DEFAULT_PUE, DEFAULT_UTILISATION
from harness.measure.plan_devices import PlanDevice
from harness.measure.weight_memory import shards
from models.specs import MESH_AXES, ModelSpec

SECONDS_PER_DAY = 86_400
F32 = 4


@dataclasses.dataclass(frozen=True)
class StepTime:
    compute_s: float
    collective_s: float
    collective_bytes: float

    @property
    def total_s(self) -> float:
        return self.compute_s + self.collective_s


@dataclasses.dataclass(frozen=True)
class RunCost:
    step: StepTime
    steps: int
    devices: int
    accelerator_days: float
    kwh: float
    kg_co2e: float
    utilisation: float


def recompute_factor(remat: str) -> float:
    """Training FLOPs relative to forward + backward (3 x forward): 'full' re-runs the forward."""
    return 4 / 3 if remat == "full" else 1.0


def step_time(
    spec: ModelSpec,
    setting: program_plan.Setting,
    global_batch: int,
    device: PlanDevice,
    compute_dtype: str = "bfloat16",
    utilisation: float = DEFAULT_UTILISATION,
) -> StepTime:
    data, expert, model = setting.mesh
    per_device = global_batch // (data * expert)
    # The 'model' axis splits each image's matmuls over its devices.
    flops = 3 * params_flops.analytic_gflops_per_image(spec) * 1e9 * per_device / model
    compute = flops * recompute_factor(setting.remat) / (device.peak_flops * utilisation)
    sent = collective_bytes(spec, setting, per_device, compute_dtype)
    return StepTime(compute, sent / device.interconnect_bytes_per_s, sent)


def _share(n: int) -> float:
    return (n - 1) / n if n > 1 else 0.0


def collective_bytes(
    spec: ModelSpec, setting: program_plan.Setting, per_device: int, compute_dtype: str
) -> float:
    """Bytes one device sends in one step (module docstring)."""
    data, expert, model = setting.mesh
    images = per_device // setting.microbatches
    itemsize = 2 if compute_dtype == "bfloat16" else F32
    recompute = setting.remat == "full"
    sent = 0.0
    for held, replicas in weight_replicas(spec, setting.mesh):
        if setting.fsdp:
            sent += setting.microbatches * 3 * held * _share(data)
            # Its shard's gradient is still all-reduced over the replicas outside 'data'.
            sent += 2 * held / data * _share(replicas // data)
        else:
            sent += 2 * held * _share(replicas)
    if spec.is_sparse and expert > 1:
        passes = 4 + 2 * recompute
        buffer = program_plan.dispatched_tokens(spec, images) * spec.vit.model_dims * itemsize
        layers = len(spec.moe_layers)
        sent += setting.microbatches * layers * passes * buffer * _share(expert)
    if model > 1:
        passes = 4 + 2 * recompute
        tokens = images * program_plan.tokens_per_image(spec)
        block = tokens * spec.vit.model_dims * itemsize
        sent += setting.microbatches * spec.vit.num_layers * passes * 2 * block * _share(model)
    return sent


def weight_replicas(spec: ModelSpec, mesh: tuple[int, int, int]) -> list[tuple[int, int]]:
    """Each weight's f32 bytes per device without FSDP, and over how many devices it is
    replicated (those its gradient is all-reduced over): experts only over 'data', weights
    split over 'model' only over 'data' and 'expert'."""
    weights = program_plan.weights_of(spec)
    sizes = dict(zip(MESH_AXES, mesh, strict=True))
    devices = mesh[0] * mesh[1] * mesh[2]
    shapes = jax.tree_util.tree_leaves(weights.shapes)
    specs = jax.tree_util.tree_structure(weights.shapes).flatten_up_to(weights.partition)
    found = []
    for shape, partition in zip(shapes, specs, strict=True):
        pieces = shards(partition, sizes)
        found.append((math.ceil(math.prod(shape.shape) / pieces) * F32, devices // pieces))
    return found


def run_cost(
    spec: ModelSpec,
    setting: program_plan.Setting,
    global_batch: int,
    steps: int,
    device: PlanDevice,
    compute_dtype: str = "bfloat16",
    utilisation: float = DEFAULT_UTILISATION,
) -> RunCost:
    """The whole run's time in accelerator-days (one JAX device for one day), its energy and
    its CO2, with the report's PUE and grid defaults."""
    step = step_time(spec, setting, global_batch, device, compute_dtype, utilisation)
    devices = setting.mesh[0] * setting.mesh[1] * setting.mesh[2]
    hours = step.total_s * steps / 3600
    units = devices / device.per_unit  # power is quoted per chip (TPU v3: 2 cores)
    kwh = carbon.energy_kwh(hours, 1, units * device.power.avg_watts, DEFAULT_PUE.pue)
    return RunCost(
        step=step,
        steps=steps,
        devices=devices,
        accelerator_days=step.total_s * steps * devices / SECONDS_PER_DAY,
        kwh=kwh,
        kg_co2e=carbon.carbon_kg(kwh, DEFAULT_GRID.kg_per_kwh),
        utilisation=utilisation,
    )
