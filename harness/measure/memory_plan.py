"""Per-device memory of one training step on a ('data', 'expert', 'model') mesh, and which
chips it fits.

    params       f32 weights each device holds under their praxis split dims
                 (params_flops.param_bytes_per_device), exact.
    optimizer    Adam's two f32 moments, split like the weights: 2 x params, exact.
    batch        the device's slice of the f32 images and int32 labels, exact.
    activations  everything else the step allocates (saved activations, gradients, the
                 optimizer update's temporaries): XLA's buffer assignment of the train step
                 compiled for CPU at reduced depth, extrapolated linearly per layer.

How the activations are measured:
- The step is the trainer's own (harness.train.steps.make_train_step), with optax Adam, the
  gin file's compute dtype and loss, in/out shardings from the weights' split dims, the
  batch over ('data', 'expert') and the state donated, as harness/train/trainer.py does.
- Compiled on simulated CPU devices at depths 2 and 4. Sparse models whose full depth has as
  many MoE as dense blocks use every_2 placement at both depths. Others (last_n, tail_n
  placements) compile one more model, 4 blocks with one MoE, so that a dense and an MoE
  block each get their own per-layer cost. Full depth = the intercept plus each block's cost.
- The data axis only replicates the step (weights are not split over it), so the compile uses
  data=1 with the same per-device batch: the per-device figures are the same, on E x M
  instead of D x E x M devices.
- jaxlib 0.4.26's CPU executables report zeros from memory_analysis(), so the temporaries
  are read from the buffer assignment XLA dumps at compile time: the sum of its
  preallocated-temp and thread-local allocations.
- XLA:CPU does not rematerialise, and TPU and GPU compilers fuse and lay out differently, so
  the activations are an estimate of what an accelerator allocates, not a measurement of it.
"""

import dataclasses
import glob
import math
import os
import re
import tempfile
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from praxis import base_layer

from harness.measure import params_flops
from harness.train.mesh import batch_spec
from harness.train.steps import TrainState, make_train_step
from models import builders
from models.specs import MESH_AXES, ModelSpec

GIB = 2**30
GB = 10**9
ADAM_MOMENTS = 2  # mu and nu, f32 like the weights
REDUCED_DEPTHS = (2, 4)


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

    @property
    def total(self) -> int:
        return self.params + self.optimizer + self.batch + self.activations

    def fits(self, chip: Chip) -> bool:
        return self.total <= chip.bytes

    def as_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["total"] = self.total
        record["fits"] = {chip.name: self.fits(chip) for chip in CHIPS}
        return record

    def scaled_to_batch(self, mesh: Sequence[int], global_batch: int) -> "MemoryPlan":
        """The plan on another data axis: weights and Adam state unchanged (they are not split
        over data), batch and activations in proportion to the per-device batch. Exact for the
        batch; for activations only as exact as the proportionality, which holds for the
        per-image buffers that dominate them and overstates fixed ones."""
        per_device = global_batch // (mesh[0] * mesh[1])
        ratio = per_device / self.per_device_batch
        return dataclasses.replace(
            self,
            mesh=tuple(mesh),
            global_batch=global_batch,
            per_device_batch=per_device,
            batch=round(self.batch * ratio),
            activations=round(self.activations * ratio),
            method=f"{self.method}; scaled from {self.per_device_batch} to {per_device} "
            "images per device in proportion",
        )


def check_batch(spec: ModelSpec, mesh: Sequence[int], global_batch: int) -> int:
    """The per-device batch; ValueError (one line) if the mesh cannot split the batch."""
    devices = mesh[0] * mesh[1]
    if global_batch < 1 or global_batch % devices:
        raise ValueError(
            f"--batch={global_batch} does not split over the {devices} devices of the data x "
            f"expert mesh axes; use a multiple of {devices}"
        )
    per_device = global_batch // devices
    if per_device % spec.min_batch:
        raise ValueError(
            f"--batch={global_batch} gives {per_device} images per device, not a multiple of "
            f"MoeSpec.group_images={spec.min_batch}; use a multiple of {devices * spec.min_batch}"
        )
    return per_device


def plan(
    spec: ModelSpec,
    mesh: Sequence[int],
    global_batch: int,
    compute_dtype: str = "float32",
    loss: str = "softmax",
) -> MemoryPlan:
    """The memory plan of `spec` on `mesh` at `global_batch`; see the module docstring."""
    mesh = tuple(mesh)
    per_device = check_batch(spec, mesh, global_batch)
    compile_mesh = (1, mesh[1], mesh[2])
    devices = compile_devices(compile_mesh)
    model_config = builders.build_model(spec, mesh_shape=list(mesh))
    variables = params_flops.abstract_variables(model_config, spec)
    params = params_flops.param_bytes_per_device(variables, mesh, MESH_AXES)
    v = spec.vit
    image_bytes = v.image_size**2 * v.num_channels * 4
    activations, how = extrapolated_temp_bytes(spec, compile_mesh, per_device, compute_dtype, loss)
    method = (
        f"params and Adam state from the weights' split dims on mesh {mesh}; activations: "
        f"XLA:CPU buffer assignment of the {compute_dtype} train step, {how}, compiled on "
        f"{len(devices)} simulated CPU device(s) as mesh {compile_mesh} with {per_device} "
        "images per device (the data axis only replicates)"
    )
    return MemoryPlan(
        mesh=mesh,
        global_batch=global_batch,
        per_device_batch=per_device,
        params=params,
        optimizer=ADAM_MOMENTS * params,
        batch=per_device * (image_bytes + 4),
        activations=activations,
        method=method,
    )


def compile_devices(compile_mesh: Sequence[int]) -> list[jax.Device]:
    needed = math.prod(compile_mesh)
    devices = jax.devices("cpu")
    if len(devices) < needed:
        raise ValueError(
            f"the memory plan compiles on {needed} CPU devices but JAX has {len(devices)}; set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={needed} before JAX starts"
        )
    return devices[:needed]


def extrapolated_temp_bytes(
    spec: ModelSpec,
    compile_mesh: tuple[int, int, int],
    per_device: int,
    compute_dtype: str,
    loss: str,
) -> tuple[int, str]:
    """Temporaries at full depth from reduced-depth compiles, and how they were obtained."""
    small, large = REDUCED_DEPTHS
    layers = spec.vit.num_layers

    def measure(depth: int, placement: str | None = None) -> int:
        model = reduced(spec, depth, placement)
        return train_step_temp_bytes(model, compile_mesh, per_device, compute_dtype, loss)

    moe = len(spec.moe_layers)
    if spec.family != "vmoe" or 2 * moe == layers:
        placement = "every_2" if spec.family == "vmoe" else None
        at_small, at_large = measure(small, placement), measure(large, placement)
        per_layer = (at_large - at_small) / (large - small)
        total = at_large + per_layer * (layers - large)
        how = (
            f"compiled at depths {small} and {large} ({at_small / GIB:.2f} and "
            f"{at_large / GIB:.2f} GiB), extrapolated linearly to {layers}"
        )
        return max(round(total), 0), how
    # Unequal dense and MoE blocks: a = 1 dense + 1 MoE, b = 2 + 2, c = 3 dense + 1 MoE.
    a, b, c = measure(small, "every_2"), measure(large, "every_2"), measure(large, "tail_1")
    dense, sparse = (c - a) / 2, (2 * b - a - c) / 2
    total = 2 * a - b + dense * (layers - moe) + sparse * moe
    how = (
        f"compiled at depths {small} and {large} (every_2) and {large} (one MoE block) "
        f"({a / GIB:.2f}, {b / GIB:.2f}, {c / GIB:.2f} GiB), extrapolated linearly to "
        f"{layers - moe} dense and {moe} MoE blocks"
    )
    return max(round(total), 0), how


def reduced(spec: ModelSpec, depth: int, placement: str | None) -> ModelSpec:
    vit = dataclasses.replace(spec.vit, num_layers=depth)
    moe = spec.moe if placement is None else dataclasses.replace(spec.moe, placement=placement)
    return dataclasses.replace(spec, vit=vit, moe=moe)


def train_step_temp_bytes(
    spec: ModelSpec,
    compile_mesh: tuple[int, int, int],
    per_device: int,
    compute_dtype: str,
    loss: str,
) -> int:
    """Temporary bytes per device of the compiled, sharded, state-donating train step."""
    mesh = Mesh(np.array(compile_devices(compile_mesh)).reshape(compile_mesh), MESH_AXES)
    model = base_layer.instantiate(
        builders.build_model(spec, mesh_shape=list(compile_mesh), compute_dtype=compute_dtype)
    )
    v = spec.vit
    image = (v.image_size, v.image_size, v.num_channels)
    # Grouped MoE layers need whole routing groups even at init.
    init_images = jnp.zeros((spec.min_batch, *image), jnp.float32)
    tx = optax.adam(1e-3)

    def init(rng: jax.Array) -> TrainState:
        variables = model.init({base_layer.PARAMS: rng, base_layer.RANDOM: rng}, init_images)
        params = variables[base_layer.PARAMS]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    state = jax.eval_shape(init, jax.random.PRNGKey(0))
    weights = model.abstract_init_with_metadata(init_images)[base_layer.PARAMS]
    partition = base_layer.var_partition_specs(weights, compile_mesh, MESH_AXES)
    param_shardings = jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), partition)
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_shardings = optax.tree_map_params(
        tx,
        lambda _, sharding: sharding,
        state.opt_state,
        param_shardings,
        transform_non_params=lambda _: replicated,
    )
    state_shardings = TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings)
    count = per_device * compile_mesh[0] * compile_mesh[1]
    batch = {
        "image": jax.ShapeDtypeStruct((count, *image), jnp.float32),
        "label": jax.ShapeDtypeStruct((count,), jnp.int32),
    }
    batch_shardings = {
        "image": NamedSharding(mesh, batch_spec(4)),
        "label": NamedSharding(mesh, batch_spec(1)),
    }
    step = make_train_step(
        model, tx, optax.constant_schedule(1e-3), loss, 0.0, jax.random.PRNGKey(1)
    )
    jitted = jax.jit(
        step,
        in_shardings=(state_shardings, batch_shardings),
        out_shardings=(state_shardings, None),
        donate_argnums=(0,),
    )
    with mesh, tempfile.TemporaryDirectory(prefix="memory_plan_") as dump:
        lowered = jitted.lower(state, batch)
        lowered.compile({"xla_dump_to": dump, "xla_dump_hlo_module_re": ".*train_step.*"})
        files = glob.glob(os.path.join(dump, "*train_step*buffer-assignment.txt"))
        if len(files) != 1:
            raise RuntimeError(f"expected one buffer-assignment dump of the step, got {files}")
        with open(files[0]) as text:
            return temp_bytes_of_buffer_assignment(text.read())


_ALLOCATION = re.compile(r"^allocation \d+: size (\d+), (.*)$", re.MULTILINE)


def temp_bytes_of_buffer_assignment(text: str) -> int:
    """Sum of an XLA buffer-assignment dump's temporary allocations: the preallocated temp
    block and thread-local buffers, not parameters, outputs or constants."""
    total = 0
    for size, flags in _ALLOCATION.findall(text):
        if "preallocated-temp" in flags or flags.startswith("thread-local"):
            total += int(size)
    return total


def format_plan(memory: MemoryPlan) -> str:
    """The plan for people: one line per part, then the chips it fits and the method."""
    rows = [
        ("params", memory.params),
        ("optimizer (Adam, 2 x params)", memory.optimizer),
        ("batch", memory.batch),
        ("activations and temporaries", memory.activations),
        ("total", memory.total),
    ]
    lines = [
        f"memory plan per device, mesh {memory.mesh}, batch {memory.global_batch} "
        f"({memory.per_device_batch} per device):"
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
