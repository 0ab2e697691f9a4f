"""Per-device memory of one training step from the program itself: the trainer's partition
specs for what the step holds across steps, and JAX's trace for what the backward pass keeps.

    params        f32 weights each device holds under the trainer's partition specs (praxis
                  split dims and, with FSDP, harness/runtime/fsdp.py's split over 'data'):
                  exact (harness/measure/weight_memory.py).
    gradients     f32, split like the weights (after their reduce-scatter under FSDP): exact
                  size, 1 x params.
    optimizer     Adam's two f32 moments: exact, 2 x params.
    accumulator   with micro-batches, the f32 gradient sum: exact, 1 x params; 0 without.
    batch         the device's f32 images and int32 labels: exact.
    residuals     what the backward pass keeps of one micro-batch under the remat policy,
                  from jax's saved_residuals of the loss (harness/measure/residual_memory.py):
                  exact as a count of the program's residuals; for 'none' and
                  'dots_saveable' an upper bound on what XLA keeps (it may fuse some away).
    recompute     under remat, the intermediates of the one block whose forward the backward
                  pass is re-running: estimate (that block's residuals with nothing saved).
    collectives   the largest communication buffers: the expert all-to-all's send and receive
                  buffers of one MoE layer (groups x E x capacity x D in the compute dtype,
                  twice), and under FSDP one block's weights gathered over 'data' plus their
                  gradient before its reduce-scatter (f32, twice): estimate.

The total adds every term as if all were live at once, where in the step the gradients grow
as the residuals are freed: a conservative sum. XLA's own temporaries (fusion scratch,
layout copies, the optimizer update's) are not in it. Against an H200 (bench/plan_vs_xla.py,
bench/README.md) the exact terms matched XLA's arguments to the MiB and the total was
1.4-1.8x the allocator's peak, so the verdict says "does not fit" only when the exact terms
alone exceed the memory, and "may not fit" when the upper bounds and estimates decide.
"""

import dataclasses
import functools
import math
import re
from typing import Any

import jax

from harness.measure import params_flops, residual_memory
from harness.measure.weight_memory import Weights, shards
from models import builders
from models.specs import MESH_AXES, ModelSpec

ADAM_MOMENTS = 2
EXACT, ESTIMATE, UPPER_BOUND = "exact", "estimate", "exact count; upper bound on XLA's"
FITS, DOES_NOT_FIT, MAY_NOT_FIT = "fits", "does not fit", "may not fit"


@dataclasses.dataclass(frozen=True)
class Setting:
    """How a config is laid out and run: the knobs the recommendations choose."""

    mesh: tuple[int, int, int]
    remat: str
    microbatches: int = 1
    fsdp: bool = False

    def describe(self) -> str:
        d, e, m = self.mesh
        return (
            f"mesh {d},{e},{m} (data, expert, model), remat '{self.remat}', "
            f"{self.microbatches} micro-batch(es), FSDP {'on' if self.fsdp else 'off'}"
        )


@dataclasses.dataclass(frozen=True)
class ProgramPlan:
    setting: Setting
    global_batch: int
    per_device_batch: int
    terms: tuple[tuple[str, int, str], ...]  # (name, bytes per device, how exact)

    @property
    def total(self) -> int:
        return sum(value for _, value, _ in self.terms)

    def term(self, name: str) -> int:
        return next(value for key, value, _ in self.terms if key == name)

    def fits(self, memory_bytes: int) -> bool:
        return self.total <= memory_bytes

    @property
    def exact_total(self) -> int:
        """The terms that are exact: what the step holds whatever XLA fuses."""
        return sum(value for _, value, how in self.terms if how == EXACT)

    def verdict(self, memory_bytes: int) -> str:
        """'fits', 'does not fit' (the exact terms alone exceed the memory) or 'may not fit'
        (only the upper-bound and estimated activation terms push it over: on an H200 the
        total was 1.4-1.8x the allocator's peak, bench/README.md)."""
        if self.fits(memory_bytes):
            return FITS
        return DOES_NOT_FIT if self.exact_total > memory_bytes else MAY_NOT_FIT

    def as_dict(self) -> dict[str, Any]:
        return {
            "setting": dataclasses.asdict(self.setting),
            "global_batch": self.global_batch,
            "per_device_batch": self.per_device_batch,
            "terms": {name: {"bytes": value, "method": how} for name, value, how in self.terms},
            "total": self.total,
        }


@functools.lru_cache(maxsize=32)
def weights_of(spec: ModelSpec) -> Weights:
    """The weights' shapes and split dims, of the unscanned stack (the same weights, one
    entry per block); the mesh sizes do not change them."""
    spec = dataclasses.replace(spec, vit=dataclasses.replace(spec.vit, scan_layers=False))
    return Weights.of_variables(params_flops.abstract_variables(builders.build_model(spec), spec))


def plan(
    spec: ModelSpec,
    setting: Setting,
    global_batch: int,
    compute_dtype: str = "float32",
    loss: str = "softmax",
) -> ProgramPlan:
    """The per-device plan of `spec` run as `setting` at `global_batch` (module docstring)."""
    data, expert, model = setting.mesh
    per_device = global_batch // (data * expert)
    images = per_device // setting.microbatches
    weights = weights_of(spec)
    params = weights.bytes_per_device(setting.mesh, setting.fsdp)
    kept = residual_memory.residuals(
        spec, images, compute_dtype, loss, (expert, model), remat=setting.remat
    )
    terms = (
        ("params", params, EXACT),
        ("gradients", params, EXACT),
        ("optimizer", ADAM_MOMENTS * params, EXACT),
        ("accumulator", params if setting.microbatches > 1 else 0, EXACT),
        ("batch", per_device * (image_bytes(spec) + 4), EXACT),
        ("residuals", kept.kept, EXACT if setting.remat == "full" else UPPER_BOUND),
        ("recompute", kept.recompute_peak, ESTIMATE),
        (
            "collectives",
            all_to_all_bytes(spec, images, expert, compute_dtype)
            + (fsdp_gather_bytes(spec, weights, setting.mesh) if setting.fsdp else 0),
            ESTIMATE,
        ),
    )
    return ProgramPlan(setting, global_batch, per_device, terms)


def image_bytes(spec: ModelSpec) -> int:
    return spec.vit.image_size**2 * spec.vit.num_channels * 4


def tokens_per_image(spec: ModelSpec) -> int:
    return (spec.vit.image_size // spec.vit.patch_size) ** 2 + (spec.pooling == "token")


def dispatched_tokens(spec: ModelSpec, images: int) -> int:
    """Token slots one MoE layer's expert buffers hold for `images` images: groups x E x
    capacity (top_k, expert_choice) or groups x E x slots (soft)."""
    moe = spec.moe
    groups = images // moe.group_images
    group_tokens = moe.group_images * tokens_per_image(spec)
    if moe.router == "soft":
        return groups * moe.num_experts * moe.slots_per_expert
    capacity = math.ceil(
        moe.num_selected_experts * group_tokens * moe.capacity_factor / moe.num_experts
    )
    return groups * moe.num_experts * min(capacity, group_tokens)


def all_to_all_bytes(spec: ModelSpec, images: int, expert_axis: int, compute_dtype: str) -> int:
    """The send and receive buffers of one MoE layer's all-to-all over 'expert'."""
    if not spec.is_sparse or expert_axis == 1:
        return 0
    itemsize = 2 if compute_dtype == "bfloat16" else 4
    return 2 * dispatched_tokens(spec, images) * spec.vit.model_dims * itemsize


def block_groups(weights: Weights) -> dict[str, list[int]]:
    """Leaf indices of each block's weights (a stack's x_layers_N, WideNet's shared block),
    the rest one group per top-level layer."""
    groups: dict[str, list[int]] = {}
    flat = jax.tree_util.tree_flatten_with_path(weights.shapes)[0]
    for index, (path, _) in enumerate(flat):
        names = [str(getattr(k, "key", k)) for k in path]
        key = "/".join(names[:2])
        if re.fullmatch(r"encoder/(attention|moe)", key):
            key = "encoder/shared"
        groups.setdefault(key, []).append(index)
    return groups


def fsdp_gather_bytes(spec: ModelSpec, weights: Weights, mesh: tuple[int, int, int]) -> int:
    """Under FSDP, the largest block's weights gathered over 'data' (still split over
    'expert' and 'model') and their gradient before its reduce-scatter, f32."""
    sizes = dict(zip(MESH_AXES, mesh, strict=True))
    shapes = jax.tree_util.tree_leaves(weights.shapes)
    specs = jax.tree_util.tree_structure(weights.shapes).flatten_up_to(weights.partition)
    per_leaf = [
        math.ceil(math.prod(s.shape) / shards(p, sizes)) * params_flops.BYTES_PER_PARAM
        for s, p in zip(shapes, specs, strict=True)
    ]
    largest = max(sum(per_leaf[i] for i in idx) for idx in block_groups(weights).values())
    return 2 * largest
