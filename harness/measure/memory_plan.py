"""Per-device memory of one training step on a ('data', 'expert', 'model') mesh, and which
chips it fits, with the gin file's FSDP (MeshSpec.shard_params_over_data) and gradient
accumulation (TrainSpec.microbatches) as the trainer runs them.

    params       f32 weights each device holds under the trainer's partition specs: their
                 praxis split dims and, with FSDP, harness/runtime/fsdp.py's split of each
                 weight's largest free dimension over 'data' (harness/measure/weight_memory.py
                 applies the trainer's own functions), exact.
    optimizer    Adam's two f32 moments, split like the weights: 2 x params, exact.
    accumulator  with micro-batches, the f32 gradient sum the micro-batch scan carries from one
                 micro-batch to the next (harness/runtime/grad_accumulation.py: zeros_like of
                 the f32 params), split like the weights: 1 x params, exact; 0 without.
    batch        the device's slice of the f32 images and int32 labels, exact.
    activations  everything else the step allocates (one micro-batch's saved activations,
                 the gradients, FSDP's all-gathered weights, the optimizer update's
                 temporaries): XLA's buffer assignment of the train step compiled for CPU at
                 reduced depth, extrapolated linearly per layer, less the accumulator (which
                 that buffer assignment holds and the line above counts).

How the activations are measured (harness/measure/step_temporaries.py):
- The step is the trainer's own (harness.runtime.steps.make_train_step, with the micro-batch
  scan when TrainSpec.microbatches > 1, which compiles one micro-batch of per-device batch /
  microbatches images whatever their number), with optax Adam, the gin file's compute dtype
  and loss, in/out shardings from the trainer's partition specs (FSDP's included), the batch
  over ('data', 'expert') and the state donated, as harness/train/trainer.py does.
- Compiled on simulated CPU devices at depths 2 and 4. Sparse models whose full depth has as
  many MoE as dense blocks use every_2 placement at both depths. Others (last_n, tail_n
  placements) compile one more model, 4 blocks with one MoE, so that a dense and an MoE
  block each get their own per-layer cost. Full depth = the intercept plus each block's cost.
- Without FSDP the data axis only replicates the step (weights are not split over it), so
  the compile uses data=1 with the same per-device batch: the per-device figures are the
  same, on E x M instead of D x E x M devices.
- With FSDP the data axis splits the weights, and the step all-gathers each where it is used
  and reduce-scatters its gradient, so the compile must have a data axis. The real D may need
  thousands of simulated devices, so the step is compiled at data 2 and 4 (same per-device
  batch, 4 x E x M devices) and the temporaries fitted as fixed + split / data: the fixed part
  (activations, all-gathered weights, gradients before their reduce-scatter) does not change
  with data, the split part (what is held in the weights' shards) falls as 1/data. Exact at
  data 2 and 4; at other sizes it assumes this form (and that a weight XLA:CPU splits over 2
  and 4 is split the same way over D).
- Under FSDP with micro-batches, XLA:CPU hoists the weights' all-gathers out of the
  micro-batch loop (the weights do not change from one micro-batch to the next), so the
  compiled step holds every weight gathered over 'data' for the whole loop, about the
  unsplit weights again, while the accumulator stays split like the weights (seen in the
  loop's carried shapes of the tiny V-MoE's optimised HLO). The activations include it, as
  the trainer's step compiled by XLA:CPU holds it.
- jaxlib 0.4.26's CPU executables report zeros from memory_analysis(), so the temporaries
  are read from the buffer assignment XLA dumps at compile time: the sum of its
  preallocated-temp and thread-local allocations.
- XLA:CPU does not rematerialise, and TPU and GPU compilers fuse, lay out and schedule
  collectives differently, so the activations are an estimate of what an accelerator
  allocates, not a measurement of it.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

from harness.measure import params_flops, step_temporaries
from harness.measure.plan_meshes import check_batch, compile_meshes
from harness.measure.weight_memory import Weights
from models import builders
from models.specs import ModelSpec

GIB = step_temporaries.GIB  # one definition, for the plan and its compile measurements
GB = 10**9
ADAM_MOMENTS = 2  # mu and nu, f32 like the weights


@dataclasses.dataclass(frozen=True)
class Chip:
    """Memory of one JAX device of an accelerator, as its vendor states it."""

    name: str
    bytes: int
    source: str


# As each vendor page states it: TPU v3/v4 in GiB; TPU v5 and NVIDIA in GB, read as 1e9 bytes
# (the smaller reading). The runtime keeps part of it (JAX on GPU preallocates 75% by default, see
# XLA_PYTHON_CLIENT_MEM_FRACTION), so "fits" means fits in the whole memory, no more.
CHIPS: tuple[Chip, ...] = (
    Chip(
        "TPU v3 core",
        16 * GIB,
        "Google Cloud TPU docs, TPU v3: 32 GiB HBM per chip, 2 TensorCores; JAX shows each "
        "core as a device",
    ),
    Chip("TPU v4 chip", 32 * GIB, "Google Cloud TPU docs, TPU v4: 32 GiB HBM per chip"),
    Chip("TPU v5e chip", 16 * GB, "Google Cloud TPU docs, TPU v5e: 16 GB HBM2 per chip"),
    Chip("TPU v5p chip", 95 * GB, "Google Cloud TPU docs, TPU v5p: 95 GB HBM2e per chip"),
    Chip("A100 40GB", 40 * GB, "NVIDIA A100 datasheet: 40GB HBM2"),
    Chip("A100 80GB", 80 * GB, "NVIDIA A100 datasheet: 80GB HBM2e"),
    Chip("H100 80GB", 80 * GB, "NVIDIA H100 datasheet (SXM5): 80GB HBM3"),
    Chip("H200 141GB", 141 * GB, "NVIDIA H200 datasheet: 141GB HBM3e"),
)


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Bytes per device of one training step; `method` says how each part was obtained."""

    mesh: tuple[int, int, int]
    global_batch: int
    per_device_batch: int
    params: int
    optimizer: int
    batch: int
    activations: int
    method: str
    shard_params_over_data: bool = False  # FSDP, as MeshSpec names it
    microbatches: int = 1
    grad_accumulator: int = 0
    # The part of `activations` split like the weights over 'data' (FSDP only): 1/data.
    activations_split_over_data: int = 0

    @property
    def total(self) -> int:
        return self.params + self.optimizer + self.grad_accumulator + self.batch + self.activations

    @property
    def microbatch_images(self) -> int:
        return self.per_device_batch // self.microbatches

    def fits(self, chip: Chip) -> bool:
        return self.total <= chip.bytes

    def as_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["total"] = self.total
        record["fits"] = {chip.name: self.fits(chip) for chip in CHIPS}
        return record

    def on_mesh(
        self, mesh: Sequence[int], params: int, microbatches: int | None = None
    ) -> "MemoryPlan":
        """The plan at the same global batch on another data axis (expert and model kept),
        where each device holds `params` weight bytes (exact: Weights.bytes_per_device, which
        changes with the data axis under FSDP), with as many or `microbatches` micro-batches.

        Weights, Adam state, accumulator and batch are exact. Of the activations, the part
        split over data scales as 1/data and the rest in proportion to the images per
        micro-batch: right for the per-image buffers that dominate them, too high for fixed
        ones (gradients, gathered weights) when the micro-batch grows and too low when it
        shrinks. Keeping the micro-batch's images as compiled keeps that part as measured."""
        microbatches = microbatches or self.microbatches
        per_device = self.global_batch // (mesh[0] * mesh[1])
        images = per_device / microbatches / self.microbatch_images
        split = round(self.activations_split_over_data * self.mesh[0] / mesh[0])
        rest = round((self.activations - self.activations_split_over_data) * images)
        return dataclasses.replace(
            self,
            mesh=tuple(mesh),
            per_device_batch=per_device,
            params=params,
            optimizer=ADAM_MOMENTS * params,
            grad_accumulator=params if microbatches > 1 else 0,
            microbatches=microbatches,
            batch=round(self.batch * per_device / self.per_device_batch),
            activations=split + rest,
            activations_split_over_data=split,
            method=f"{self.method}; moved to mesh {tuple(mesh)} ({per_device} images per "
            f"device, {microbatches} micro-batch(es)) without compiling: activations scaled in "
            "proportion to the images per micro-batch (and their part split over data as "
            "1/data)",
        )


def model_weights(spec: ModelSpec, mesh: Sequence[int]) -> Weights:
    """Every weight's shape and split dims, built abstractly (no weights in memory)."""
    model_config = builders.build_model(spec, mesh_shape=list(mesh))
    return Weights.of_variables(params_flops.abstract_variables(model_config, spec))


def plan(
    spec: ModelSpec,
    mesh: Sequence[int],
    global_batch: int,
    compute_dtype: str = "float32",
    loss: str = "softmax",
    shard_params_over_data: bool = False,
    microbatches: int = 1,
) -> MemoryPlan:
    """The memory plan of `spec` on `mesh` at `global_batch`; see the module docstring."""
    mesh = tuple(mesh)
    per_device = check_batch(spec, mesh, global_batch, microbatches)
    params = model_weights(spec, mesh).bytes_per_device(mesh, shard_params_over_data)
    accumulator = params if microbatches > 1 else 0
    step = step_temporaries.Step(
        per_device, compute_dtype, loss, microbatches, shard_params_over_data
    )
    temporaries = step_temporaries.temporaries(spec, mesh, step)
    # The buffer assignment holds the accumulator (the scan's carry); it has its own line.
    activations = max(temporaries.total - accumulator, 0)
    split = temporaries.split_over_data
    if shard_params_over_data:  # the accumulator is split over data like the weights
        split = max(split - accumulator, 0)
    return MemoryPlan(
        mesh=mesh,
        global_batch=global_batch,
        per_device_batch=per_device,
        params=params,
        optimizer=ADAM_MOMENTS * params,
        batch=per_device * (image_bytes(spec) + 4),
        activations=activations,
        method=method(mesh, step, temporaries.how),
        shard_params_over_data=shard_params_over_data,
        microbatches=microbatches,
        grad_accumulator=accumulator,
        activations_split_over_data=min(split, activations),
    )


def image_bytes(spec: ModelSpec) -> int:
    v = spec.vit
    return v.image_size**2 * v.num_channels * 4


def method(mesh: tuple[int, int, int], step: step_temporaries.Step, how: str) -> str:
    """How each part of the plan was obtained, in one sentence for its `method` field."""
    fsdp = step.shard_params_over_data
    split = (
        " and, FSDP, over 'data' by harness/runtime/fsdp.py (exact)"
        if fsdp
        else " (no FSDP: not split over 'data')"
    )
    accumulated = ", f32 gradient accumulator 1 x params" if step.microbatches > 1 else ""
    text = (
        f"params, Adam state{accumulated} from the trainer's partition specs on mesh {mesh}: "
        f"praxis split dims{split}; activations: XLA:CPU buffer assignment of the "
        f"{step.compute_dtype} train step"
    )
    if step.microbatches > 1:
        images = step.per_device // step.microbatches
        text += (
            f" with its {step.microbatches}-micro-batch scan ({images} images each), less the "
            "accumulator it holds"
        )
    compiled = compile_meshes(mesh, fsdp)
    devices = max(m[0] * m[1] * m[2] for m in compiled)
    if len(compiled) == 1:
        return (
            f"{text}, {how}, compiled on {devices} simulated CPU device(s) as mesh "
            f"{compiled[0]} with {step.per_device} images per device"
            + ("" if fsdp else " (the data axis only replicates)")
        )
    return (
        f"{text}, with {step.per_device} images per device, compiled on up to {devices} "
        f"simulated CPU devices with the data axis at 2 and 4 (FSDP: the data axis splits the "
        f"weights; the real one would need {mesh[0] * mesh[1] * mesh[2]}): {how}"
    )


def format_plan(memory: MemoryPlan) -> str:
    """The plan for people: one line per part, then the chips it fits and the method."""
    rows = [
        ("params", memory.params),
        ("optimizer (Adam, 2 x params)", memory.optimizer),
        ("gradient accumulator", memory.grad_accumulator),
        ("batch", memory.batch),
        ("activations and temporaries", memory.activations),
        ("total", memory.total),
    ]
    fsdp = "FSDP (weights and Adam split over data)" if memory.shard_params_over_data else "no FSDP"
    micro = (
        f"{memory.microbatches} micro-batches of {memory.microbatch_images} images"
        if memory.microbatches > 1
        else "1 micro-batch"
    )
    lines = [
        f"memory plan per device, mesh {memory.mesh}, batch {memory.global_batch} "
        f"({memory.per_device_batch} per device), {fsdp}, {micro}:"
    ]
    lines += [f"  {name:<30} {value / GIB:9.2f} GiB" for name, value in rows]
    for chip in CHIPS:
        verdict = "fits" if memory.fits(chip) else "does not fit"
        lines.append(
            f"  {chip.name:<14} {chip.bytes / GIB:6.1f} GiB  {verdict} "
            f"({100 * memory.total / chip.bytes:.0f}% of it)"
        )
    lines.append(f"  method: {memory.method}")
    return "\n".join(lines)
