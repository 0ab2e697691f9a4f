"""Bytes of weights each device holds, from the partition specs the trainer gives them.

The trainer (harness/train/trainer.py) places each weight by its praxis split dims
(base_layer.var_partition_specs) and, with MeshSpec.shard_params_over_data, also over 'data'
by harness/runtime/fsdp.py's rule (shard_tree_over_data). The memory plan goes through the same
two functions rather than re-deriving either, so its weight, Adam and gradient-accumulator
bytes are those of the layout training uses, exactly.
"""

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec
from praxis import base_layer

from harness.measure import params_flops
from harness.runtime import fsdp
from models.specs import MESH_AXES

BYTES_PER_PARAM = params_flops.BYTES_PER_PARAM  # weights are kept in float32


@dataclasses.dataclass(frozen=True)
class Weights:
    """Every weight's stored shape and its split dims, before any FSDP split."""

    shapes: Any  # tree of jax.ShapeDtypeStruct
    partition: Any  # tree of PartitionSpec, the same structure

    @classmethod
    def of_variables(cls, variables: Any) -> "Weights":
        """From praxis WeightHParams (params_flops.abstract_variables): a scanned stack's
        weights keep their leading per-layer axes (params_flops.full_shape)."""
        is_weight = lambda x: isinstance(x, base_layer.WeightHParams)
        shapes = jax.tree_util.tree_map(
            lambda w: jax.ShapeDtypeStruct(params_flops.full_shape(w), jnp.float32),
            variables,
            is_leaf=is_weight,
        )
        # The mesh shape is not read by var_partition_specs; the axis names are.
        partition = base_layer.var_partition_specs(variables, (1,) * len(MESH_AXES), MESH_AXES)
        return cls(shapes=shapes, partition=partition)

    def partition_specs(self, mesh: Sequence[int], shard_params_over_data: bool) -> Any:
        """The specs the trainer places the weights (and Adam moments) with on `mesh`."""
        if not shard_params_over_data:
            return self.partition
        return fsdp.shard_tree_over_data(self.shapes, self.partition, mesh[0])

    def bytes_per_device(self, mesh: Sequence[int], shard_params_over_data: bool) -> int:
        """float32 bytes of the weights one device holds on `mesh`."""
        sizes = dict(zip(MESH_AXES, mesh, strict=True))
        specs = self.partition_specs(mesh, shard_params_over_data)
        shapes = jax.tree_util.tree_leaves(self.shapes)
        flat_specs = jax.tree_util.tree_structure(self.shapes).flatten_up_to(specs)
        return sum(
            math.ceil(math.prod(shape.shape) / shards(spec, sizes)) * BYTES_PER_PARAM
            for shape, spec in zip(shapes, flat_specs, strict=True)
        )


def shards(spec: PartitionSpec, sizes: dict[str, int]) -> int:
    """How many pieces `spec` cuts a weight into: the product of the axes it names."""
    count = 1
    for entry in spec:
        names = entry if isinstance(entry, tuple) else (entry,)
        count *= math.prod(sizes[name] for name in names if name is not None)
    return count
