"""Fully-sharded data parallelism: weights and optimizer state also split over 'data'.

Under plain data parallelism every data-axis replica holds the whole (expert- and model-split)
weights and both Adam moments. With `MeshSpec.shard_params_over_data`, each weight's largest
dimension that no mesh axis splits yet, and that the data axis divides, is split over 'data'
as well; the moments follow their weight. Per-device weight and optimizer memory then falls
by about the data-axis size, and XLA all-gathers each weight where the step uses it and
reduce-scatters its gradient. Weights with no such dimension (biases of odd size, scalars)
stay as they were.
"""

from collections.abc import Sequence
from typing import Any

import jax
from jax.sharding import PartitionSpec

DATA_AXIS = "data"


def data_split_dim(shape: Sequence[int], spec: PartitionSpec, data_size: int) -> int | None:
    """The dimension to split over 'data': the largest free one the axis divides, or None."""
    if data_size <= 1 or _uses_axis(spec, DATA_AXIS):
        return None
    entries = tuple(spec) + (None,) * (len(shape) - len(spec))
    free = [d for d, size in enumerate(shape) if entries[d] is None and size % data_size == 0]
    # The largest dimension leaves the most even shards; the first wins ties, so the choice
    # is stable from run to run (checkpoints restore into the same layout).
    return max(free, key=lambda d: shape[d], default=None)


def shard_over_data(shape: Sequence[int], spec: PartitionSpec, data_size: int) -> PartitionSpec:
    """`spec` with its weight's data_split_dim (if any) split over 'data'."""
    dim = data_split_dim(shape, spec, data_size)
    if dim is None:
        return spec
    entries = list(tuple(spec) + (None,) * (len(shape) - len(spec)))
    entries[dim] = DATA_AXIS
    return PartitionSpec(*entries)


def shard_tree_over_data(shapes: Any, partition: Any, data_size: int) -> Any:
    """`partition` (a tree of PartitionSpecs) with every weight split by `shard_over_data`;
    `shapes` is the weights' tree of arrays or ShapeDtypeStructs. The trainer and the memory
    plan (harness/measure/memory_plan.py) both place weights through this, so the plan counts
    the layout training uses."""
    return jax.tree_util.tree_map(
        lambda weight, spec: shard_over_data(weight.shape, spec, data_size), shapes, partition
    )


def _uses_axis(spec: PartitionSpec, axis: str) -> bool:
    for entry in spec:
        names = entry if isinstance(entry, tuple) else (entry,)
        if axis in names:
            return True
    return False
