r"""Collectives in one compiled V-MoE train step, per MoE dispatch and mesh.

  .venv/bin/python bench/collectives.py [--meshes=2x4x1,1x8x1] [--dispatches=gather,einsum,
      all_to_all] [--routers=top_k] [--per_device_batch=2]

Runs on 8 simulated CPU devices (it sets XLA_FLAGS itself). For each (router, dispatch,
mesh) it compiles the train step of a tiny V-MoE (loss, gradients and an SGD update, with the
trainer's parameter and batch shardings) and counts the collectives in the optimised HLO:
how many of each kind and the bytes they produce per step, plus the largest all-gather and
the per-device temporary memory XLA reserves. Nothing runs; only the compiled program is
read, so the numbers do not depend on the machine's load.

The module also holds what tests/test_expert_parallel.py compiles and parses.
"""

import argparse
import dataclasses
import glob
import os
import pathlib
import re
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

if __name__ == "__main__":
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    )
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    # Run as a script from anywhere: the project's packages live one folder up.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from praxis import base_layer

from models import builders, specs

# Sizes no two dimensions share, so a shape in the HLO says what it is: tokens are
# [.., TOKENS, DIMS], expert weights [EXPERTS, ..].
IMAGE, PATCH, DIMS, HIDDEN, EXPERTS, CLASSES = 20, 4, 24, 40, 8, 10
TOKENS = (IMAGE // PATCH) ** 2 + 1  # 26 with the class token
COLLECTIVES = ("all-gather", "all-reduce", "all-to-all", "reduce-scatter", "collective-permute")
DTYPE_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "pred": 1, "s8": 1, "u8": 1}


def tiny_vmoe(router: str = "top_k", dispatch: str = "auto", **moe: Any) -> specs.ModelSpec:
    """Two blocks, the second an MoE of 8 experts; one image per routing group."""
    vit = specs.VitSpec(
        image_size=IMAGE,
        patch_size=PATCH,
        num_channels=3,
        num_classes=CLASSES,
        model_dims=DIMS,
        num_layers=2,
        mlp_dims=HIDDEN,
        num_heads=2,
    )
    fields = dict(num_experts=EXPERTS, num_selected_experts=2, capacity_factor=1.0)
    moe_spec = specs.MoeSpec(router=router, dispatch=dispatch, **{**fields, **moe})
    return specs.ModelSpec(family="vmoe", vit=vit, moe=moe_spec)


@dataclasses.dataclass
class TrainStep:
    """A jitted SGD train step of a model on a mesh, with the trainer's shardings."""

    mesh: Mesh
    step: Any  # jitted (params, images, labels) -> (loss, grads, new params)
    params: Any  # initialised parameters, placed
    param_shardings: Any
    batch_sharding: NamedSharding

    def lower(self, images: jax.Array, labels: jax.Array):
        with self.mesh:
            return self.step.lower(self.params, images, labels)

    def __call__(self, images: jax.Array, labels: jax.Array, executable: Any = None):
        """Runs the step (or `executable`, a compilation of it) on a batch it places."""
        with self.mesh:
            images = jax.device_put(images, self.batch_sharding)
            labels = jax.device_put(labels, self.batch_sharding)
            return (executable or self.step)(self.params, images, labels)


def make_train_step(
    spec: specs.ModelSpec, mesh_shape: Sequence[int], compute_dtype: str = "float32"
) -> TrainStep:
    """The minimum of harness/train/trainer.py: praxis split dims -> parameter shardings,
    batch over ('data', 'expert'), loss + aux losses, grads, one SGD update."""
    count = int(np.prod(mesh_shape))
    mesh = Mesh(np.array(jax.devices()[:count]).reshape(mesh_shape), specs.MESH_AXES)
    config = builders.build_model(spec, mesh_shape=mesh_shape, compute_dtype=compute_dtype)
    model = base_layer.instantiate(config)
    size, channels = spec.vit.image_size, spec.vit.num_channels
    init_images = jnp.zeros((spec.min_batch, size, size, channels), jnp.float32)
    metadata = model.abstract_init_with_metadata(init_images)[base_layer.PARAMS]
    partition = base_layer.var_partition_specs(metadata, mesh_shape, specs.MESH_AXES)
    param_shardings = jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), partition)
    batch_axes = ("data", "expert")
    image_sharding = NamedSharding(mesh, PartitionSpec(batch_axes))
    label_sharding = NamedSharding(mesh, PartitionSpec(batch_axes))
    rngs = {base_layer.PARAMS: jax.random.PRNGKey(0), base_layer.RANDOM: jax.random.PRNGKey(1)}
    # Initialised unsharded, then placed: a sharded init of the experts differs with the
    # mesh (see the report of issue 18), and every mesh must start from the same weights.
    params = jax.jit(lambda: model.init(rngs, init_images)[base_layer.PARAMS])()
    params = jax.device_put(params, param_shardings)
    tx = optax.sgd(0.1)
    noise = jax.random.PRNGKey(2)

    def loss_fn(params: Any, images: jax.Array, labels: jax.Array) -> jax.Array:
        context = base_layer.JaxContext.HParams(do_eval=False)
        with base_layer.JaxContext.new_context(hparams=context):
            logits, collections = model.apply(
                {base_layer.PARAMS: params},
                images,
                rngs={base_layer.RANDOM: noise},
                mutable=[base_layer.AUX_LOSS, "stats"],
            )
        loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
        aux = jax.tree_util.tree_leaves(
            collections.get(base_layer.AUX_LOSS, {}),
            is_leaf=lambda x: isinstance(x, base_layer.AuxLossStruct),
        )
        return loss + sum(jnp.sum(a.value) for a in aux)

    def step(params: Any, images: jax.Array, labels: jax.Array):
        loss, grads = jax.value_and_grad(loss_fn)(params, images, labels)
        updates, _ = tx.update(grads, tx.init(params), params)
        return loss, grads, optax.apply_updates(params, updates)

    jitted = jax.jit(
        step,
        in_shardings=(param_shardings, image_sharding, label_sharding),
        out_shardings=(NamedSharding(mesh, PartitionSpec()), param_shardings, param_shardings),
    )
    return TrainStep(mesh, jitted, params, param_shardings, image_sharding)


def batch(spec: specs.ModelSpec, images: int, seed: int = 0) -> tuple[jax.Array, jax.Array]:
    size, channels = spec.vit.image_size, spec.vit.num_channels
    keys = jax.random.split(jax.random.PRNGKey(seed))
    x = jax.random.normal(keys[0], (images, size, size, channels))
    return x, jax.random.randint(keys[1], (images,), 0, spec.vit.num_classes)


@dataclasses.dataclass(frozen=True)
class Collective:
    """One collective op of an HLO module: its kind and its result and operand shapes."""

    kind: str
    results: tuple[tuple[str, tuple[int, ...]], ...]  # (dtype, dims) of each result
    operands: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def bytes(self) -> int:
        return sum(DTYPE_BYTES.get(t, 4) * int(np.prod(d)) for t, d in self.results)


_OP = re.compile(
    r"=\s*(?P<result>\(.*?\)|\S+)\s+(?P<kind>" + "|".join(COLLECTIVES) + r")(?:-start)?\("
)
_SHAPE = re.compile(r"([a-z]+[0-9]*)\[([0-9,]*)\]")


def _shapes(text: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple(
        (dtype, tuple(int(d) for d in dims.split(",") if d)) for dtype, dims in _SHAPE.findall(text)
    )


def _operands(line: str, start: int) -> str:
    """The text between the op's parentheses, starting just after the opening one."""
    depth = 1
    for i in range(start, len(line)):
        depth += {"(": 1, ")": -1}.get(line[i], 0)
        if depth == 0:
            return line[start:i]
    return line[start:]


def collectives(hlo_text: str) -> list[Collective]:
    """Every collective of an optimised HLO module (a `-start`/`-done` pair counts once)."""
    found = []
    for line in hlo_text.splitlines():
        match = _OP.search(line)
        if match:
            operands = _operands(line, match.end())
            found.append(Collective(match["kind"], _shapes(match["result"]), _shapes(operands)))
    return found


def summary(ops: list[Collective]) -> dict[str, tuple[int, int]]:
    """{kind: (count, bytes produced)} for each collective kind present."""
    out: dict[str, tuple[int, int]] = {}
    for op in ops:
        count, size = out.get(op.kind, (0, 0))
        out[op.kind] = (count + 1, size + op.bytes)
    return out


@dataclasses.dataclass(frozen=True)
class Compiled:
    """One compilation of a train step: what the tests and the table read from it."""

    hlo: str  # the optimised, partitioned HLO module (one device's program)
    temp_bytes: int  # per-device temporary memory
    executable: Any  # callable as the jitted step, on inputs placed as it expects


def compile_with_stats(lowered: Any) -> Compiled:
    """Compiles once, reading the temp memory from `memory_analysis()` where the backend
    reports it (GPU, TPU) and else (CPU reports 0) from XLA's buffer assignment: the size of
    the preallocated temporary buffer."""
    with tempfile.TemporaryDirectory() as folder:
        compiled = lowered.compile({"xla_dump_to": folder, "xla_dump_hlo_as_text": True})
        paths = glob.glob(os.path.join(folder, "*after_optimizations-buffer-assignment.txt"))
        assignment = "".join(pathlib.Path(p).read_text() for p in paths)
    temp = compiled.memory_analysis().temp_size_in_bytes
    if not temp:
        pattern = r"allocation \d+: size (\d+), preallocated-temp"
        temp = sum(int(n) for n in re.findall(pattern, assignment))
    return Compiled(compiled.as_text(), temp, compiled)


def compile_step(
    spec: specs.ModelSpec, mesh_shape: Sequence[int], per_device_batch: int
) -> tuple[Compiled, TrainStep]:
    step = make_train_step(spec, mesh_shape)
    images, labels = batch(spec, per_device_batch * int(np.prod(mesh_shape)))
    return compile_with_stats(step.lower(images, labels)), step


def _parse_mesh(text: str) -> tuple[int, int, int]:
    data, expert, model = (int(x) for x in text.split("x"))
    return data, expert, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meshes", default="2x4x1,1x8x1")
    parser.add_argument("--dispatches", default="gather,einsum,all_to_all")
    parser.add_argument("--routers", default="top_k")
    parser.add_argument("--per_device_batch", type=int, default=2)
    args = parser.parse_args()
    print(
        f"Tiny V-MoE train step (D={DIMS}, {TOKENS} tokens/image, E={EXPERTS}, k=2, C=1, "
        f"1 image/group), {args.per_device_batch} images per device; jax {jax.__version__}, "
        f"{jax.devices()[0].platform} x{jax.device_count()}. Bytes: sum of the collectives' "
        "results per step. Largest all-gather: its result shape."
    )
    kinds = ("all-to-all", "all-gather", "all-reduce", "reduce-scatter", "collective-permute")
    header = ["router", "dispatch", "mesh", *(f"{k} n / KiB" for k in kinds)]
    header += ["largest all-gather", "temp KiB"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for router in args.routers.split(","):
        for dispatch in args.dispatches.split(","):
            for mesh in args.meshes.split(","):
                spec = tiny_vmoe(router, dispatch)
                compiled, _ = compile_step(spec, _parse_mesh(mesh), args.per_device_batch)
                ops = collectives(compiled.hlo)
                counts = summary(ops)
                cells = [f"{n} / {b / 1024:.1f}" for n, b in (counts.get(k, (0, 0)) for k in kinds)]
                gathers = [op for op in ops if op.kind == "all-gather"]
                largest = max(gathers, key=lambda op: op.bytes, default=None)
                shape = "-" if largest is None else "x".join(map(str, largest.results[0][1]))
                row = [router, dispatch, mesh, *cells, shape, f"{compiled.temp_bytes / 1024:.0f}"]
                print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
