"""Expert parallelism by all-to-all: tokens travel to their experts' devices and back.

Left to XLA's SPMD partitioner, the index dispatch gathers every group's tokens onto every
device (its gathers and scatters index the group axis, which the partitioner cannot prove
local), and the one-hot einsum dispatch all-to-alls only after gathering the tokens. Either
way a device's temporary memory grows with the *global* batch.

Here the dispatch runs under `shard_map`, as google-research/vmoe does: the batch is split
over ('data', 'expert'), so each device holds whole routing groups and routes them itself.
It fills its expert buffers [E, G_local, Cap, D] locally, and one all-to-all over 'expert'
leaves each device with its E/n experts' buffers for all n * G_local groups of its row of
the expert axis. It runs those experts with its own slice of their weights (hidden units
over 'model', summed with a psum), and a second all-to-all returns the outputs, which are
combined locally. Nothing is all-gathered: neither tokens nor expert weights. The routing
itself (router matmul, top-k, aux losses) stays outside, where every op is per group and so
already local to a device.
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental.shard_map import shard_map
from jax.interpreters import pxla
from jax.sharding import Mesh, PartitionSpec

from models.specs import MESH_AXES

BATCH_AXES = ("data", "expert")  # as harness/runtime/mesh.py splits the batch
EXPERT_AXIS = "expert"
MODEL_AXIS = "model"

# (routing pytree with leading group axis, tokens [G, S, D], expert fn) -> [G, S, D].
LocalDispatch = Callable[[Any, jax.Array, Callable[[jax.Array], jax.Array]], jax.Array]
# (expert weights as local shards, buffers [E_local, G, Cap, D], a key unique to the device
# or None) -> [E_local, G, Cap, D].
ExpertMlp = Callable[[dict[str, jax.Array], jax.Array, jax.Array | None], jax.Array]


def context_mesh() -> Mesh | None:
    """The mesh of the enclosing `with mesh:` block, or None outside one (e.g. abstract init)."""
    mesh = pxla.thread_resources.env.physical_mesh
    return None if mesh.empty else mesh


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
    return tuple(axis for axis in BATCH_AXES if axis in mesh.axis_names)


def batch_shards(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in batch_axes(mesh))


def can_shard(mesh: Mesh | None, num_groups: int, num_experts: int) -> bool:
    """Whether every device gets whole groups and whole experts. Initialising with a single
    routing group (ModelSpec.min_batch) cannot, and takes the unsharded path."""
    if mesh is None or tuple(mesh.axis_names) != MESH_AXES:
        return False
    return num_groups % batch_shards(mesh) == 0 and num_experts % mesh.shape[EXPERT_AXIS] == 0


def expert_parallel_dispatch(
    mesh: Mesh,
    local_dispatch: LocalDispatch,
    routing: Any,
    inputs: jax.Array,
    weights: dict[str, jax.Array],
    weight_specs: dict[str, Sequence[str | None]],
    expert_mlp: ExpertMlp,
    key: jax.Array | None = None,
) -> jax.Array:
    """Runs `local_dispatch` on each device's groups with experts reached by all-to-all.

    Args:
      mesh: the ('data', 'expert', 'model') mesh the step runs on.
      local_dispatch: fills expert buffers from a device's groups, calls the expert fn it is
        given on them, and combines its outputs: the same function the single-device path
        runs on all groups.
      routing: pytree of arrays with a leading group axis (assignments, choices, weights).
      inputs: [G, S, D] tokens, G split over ('data', 'expert').
      weights: the expert weights, each with a leading expert axis.
      weight_specs: each weight's split dims (its WeightSharding mapping, mesh axes only).
      expert_mlp: runs the local experts on their buffers.
      key: randomness for the experts (dropout); each device folds in its mesh position.

    Returns:
      [G, S, D] outputs, split like `inputs`.
    """
    group_spec = PartitionSpec(batch_axes(mesh))
    experts = mesh.shape[EXPERT_AXIS]

    def per_device(
        routing: Any, inputs: jax.Array, weights: dict[str, jax.Array], key: jax.Array | None
    ) -> jax.Array:
        if key is not None:
            # Every device its own randomness; axes of size 1 left out, as shard_map would
            # count the key as differing across them and the output as not replicated.
            for axis in mesh.axis_names:
                if mesh.shape[axis] > 1:
                    key = jax.random.fold_in(key, jax.lax.axis_index(axis))

        def experts_fn(buffers: jax.Array) -> jax.Array:  # [E, G_local, Cap, D]
            if experts > 1:
                # Split the experts among the expert axis, concatenating the groups: each
                # device now holds its experts' buffers of every group in its row.
                buffers = jax.lax.all_to_all(buffers, EXPERT_AXIS, 0, 1, tiled=True)
            outputs = expert_mlp(weights, buffers, key)
            if experts > 1:
                outputs = jax.lax.all_to_all(outputs, EXPERT_AXIS, 1, 0, tiled=True)
            return outputs

        return local_dispatch(routing, inputs, experts_fn)

    routing_specs = jax.tree_util.tree_map(lambda _: group_spec, routing)
    specs = {name: _spec(mesh, weight_specs[name]) for name in weights}
    return shard_map(
        per_device,
        mesh=mesh,
        in_specs=(routing_specs, group_spec, specs, None if key is None else PartitionSpec()),
        out_specs=group_spec,
    )(routing, inputs, weights, key)


def map_groups(mesh: Mesh, fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` on each device's own groups: for per-group routing maths (top-k over
    experts or tokens) that the SPMD partitioner would otherwise gather globally first.

    Every input and output leaf has a leading group axis, split over ('data', 'expert').
    """
    spec = PartitionSpec(batch_axes(mesh))
    return shard_map(fn, mesh=mesh, in_specs=spec, out_specs=spec)(*args)


def _spec(mesh: Mesh, mapping: Sequence[str | None]) -> PartitionSpec:
    """The weight's split dims without axes of size 1: shard_map must see a weight as
    replicated over those to know the outputs are."""
    return PartitionSpec(*(axis if axis and mesh.shape[axis] > 1 else None for axis in mapping))


def expert_mlp(
    weights: dict[str, jax.Array],
    x: jax.Array,
    activation: Callable[[jax.Array], jax.Array],
    dropout: Callable[[jax.Array], jax.Array] | None = None,
    hidden_axis: str | None = None,
) -> jax.Array:
    """E expert MLPs on their buffers: [E, G, Cap, D] -> [E, G, Cap, D].

    `hidden_axis`: the mesh axis the hidden units are split over inside shard_map; each
    device then holds a slice of every expert's hidden units, and the second matmul's
    partial sums are added over it.

    The matmuls run on [E, G*Cap, D], as SparseMoe._experts does and for the same reason:
    oneDNN fuses bias and activation into a matmul with one row axis, not into a 4-D one.
    """
    experts, groups, capacity, dims = x.shape
    rows = x.reshape(experts, groups * capacity, dims)
    hidden = jnp.einsum("end,edh->enh", rows, weights["wi"]) + weights["bi"][:, None, :]
    hidden = activation(hidden)
    if dropout is not None:
        hidden = dropout(hidden)
    out = jnp.einsum("enh,ehd->end", hidden, weights["wo"])
    if hidden_axis is not None:
        out = jax.lax.psum(out, hidden_axis)
    out = out + weights["bo"][:, None, :]
    return out.reshape(experts, groups, capacity, -1)
