"""Temporary bytes per device of the trainer's train step: XLA:CPU's buffer assignment of the
step compiled at reduced depth, extrapolated linearly per layer (and, under FSDP, over the
data axis). harness/measure/memory_plan.py's docstring says what the figure stands for.
"""

import dataclasses
import glob
import math
import os
import re
import tempfile
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from praxis import base_layer

from harness.measure.plan_meshes import compile_meshes
from harness.runtime import fsdp
from harness.runtime.mesh import batch_spec
from harness.runtime.steps import TrainState, make_train_step
from models import builders
from models.specs import MESH_AXES, ModelSpec

GIB = 2**30
REDUCED_DEPTHS = (2, 4)


@dataclasses.dataclass(frozen=True)
class Step:
    """The train step as a gin file configures it, at one per-device batch."""

    per_device: int
    compute_dtype: str = "float32"
    loss: str = "softmax"
    microbatches: int = 1
    shard_params_over_data: bool = False


@dataclasses.dataclass(frozen=True)
class Temporaries:
    """Bytes per device at full depth on the real mesh, and how they were obtained."""

    total: int
    # The part split like the weights over 'data' (FSDP: reduce-scattered gradients, the
    # optimizer update's temporaries): it falls as 1/data. 0 without FSDP.
    split_over_data: int
    how: str


def compile_devices(compile_mesh: Sequence[int]) -> list[jax.Device]:
    needed = math.prod(compile_mesh)
    devices = jax.devices("cpu")
    if len(devices) < needed:
        raise ValueError(
            f"the memory plan compiles on {needed} CPU devices but JAX has {len(devices)}; set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={needed} before JAX starts"
        )
    return devices[:needed]


def temporaries(spec: ModelSpec, mesh: Sequence[int], step: Step) -> Temporaries:
    """Without FSDP (or with data=1, where it splits nothing) the data axis only replicates the
    step, so it compiles with data=1: same per-device figures on E x M devices. With FSDP it
    compiles at data 2 and 4 and fits fixed + split / data through both, since the weights'
    and their gradients' shards, and what the update allocates like them, shrink with data
    while the all-gathered layer weights and the activations do not."""
    meshes = compile_meshes(mesh, step.shard_params_over_data)
    if len(meshes) == 1:
        total, how = extrapolated_temp_bytes(spec, meshes[0], step)
        return Temporaries(total, 0, how)
    (small, *_), (large, *_) = meshes
    at_small, how_small = extrapolated_temp_bytes(spec, meshes[0], step)
    at_large, how_large = extrapolated_temp_bytes(spec, meshes[1], step)
    # at_d = fixed + split / d through d = small and large; a negative split (compiler noise
    # at tiny sizes) counts as none.
    split = max((at_small - at_large) / (1 / small - 1 / large), 0.0)
    fixed = at_large - split / large
    data = mesh[0]
    how = (
        f"as mesh {meshes[0]}: {how_small}; as mesh {meshes[1]}: {how_large}; fitted as "
        f"{fixed / GIB:.2f} GiB + {split / GIB:.2f} GiB / data, at data={data}"
    )
    return Temporaries(max(round(fixed + split / data), 0), round(split / data), how)


def extrapolated_temp_bytes(
    spec: ModelSpec, compile_mesh: tuple[int, int, int], step: Step
) -> tuple[int, str]:
    """Temporaries at full depth from reduced-depth compiles, and how they were obtained."""
    small, large = REDUCED_DEPTHS
    layers = spec.vit.num_layers

    def measure(depth: int, placement: str | None = None) -> int:
        return train_step_temp_bytes(reduced(spec, depth, placement), compile_mesh, step)

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


def train_step_temp_bytes(spec: ModelSpec, compile_mesh: tuple[int, int, int], step: Step) -> int:
    """Temporary bytes per device of the compiled, sharded, state-donating train step."""
    mesh = Mesh(np.array(compile_devices(compile_mesh)).reshape(compile_mesh), MESH_AXES)
    model = base_layer.instantiate(
        builders.build_model(spec, mesh_shape=list(compile_mesh), compute_dtype=step.compute_dtype)
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
    if step.shard_params_over_data:  # the trainer's FSDP layout, by the trainer's function
        partition = fsdp.shard_tree_over_data(state.params, partition, compile_mesh[0])
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
    count = step.per_device * compile_mesh[0] * compile_mesh[1]
    batch = {
        "image": jax.ShapeDtypeStruct((count, *image), jnp.float32),
        "label": jax.ShapeDtypeStruct((count,), jnp.int32),
    }
    batch_shardings = {
        "image": NamedSharding(mesh, batch_spec(4)),
        "label": NamedSharding(mesh, batch_spec(1)),
    }
    # The trainer's step, micro-batch scan included: the accumulator and one micro-batch's
    # activations are what it holds (harness/runtime/grad_accumulation.py).
    train_step = make_train_step(
        model,
        tx,
        optax.constant_schedule(1e-3),
        step.loss,
        0.0,
        jax.random.PRNGKey(1),
        step.microbatches,
    )
    jitted = jax.jit(
        train_step,
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
