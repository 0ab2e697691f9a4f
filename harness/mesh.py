"""The device mesh every family trains on: axes ('data', 'expert', 'model').

Parameters follow their praxis split dims (experts on 'expert', wide matrices on 'model');
the batch is split over ('data', 'expert'), so expert parallelism also carries data.
"""

import dataclasses
import math

import gin
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, PartitionSpec

from models.specs import MESH_AXES, Spec

BATCH_AXES = ("data", "expert")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MeshSpec(Spec):
    """Mesh axis sizes; -1 (on at most one axis) takes the devices the others leave."""

    data: int = -1
    expert: int = 1
    model: int = 1

    def resolve(self, device_count: int) -> tuple[int, int, int]:
        sizes = (self.data, self.expert, self.model)
        named = ", ".join(f"{a}={s}" for a, s in zip(MESH_AXES, sizes, strict=True))
        if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
            raise ValueError(
                f"MeshSpec ({named}) is invalid; give positive sizes with at most one -1"
            )
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if device_count % known:
                raise ValueError(
                    f"MeshSpec ({named}) cannot fill {device_count} devices: {known} does not "
                    f"divide {device_count}; pick sizes whose product divides the device count"
                )
            sizes = tuple(device_count // known if s == -1 else s for s in sizes)
        if math.prod(sizes) != device_count:
            raise ValueError(
                f"MeshSpec ({named}) multiplies to {math.prod(sizes)} but there are "
                f"{device_count} devices; make the sizes multiply to {device_count} or use -1"
            )
        return sizes  # type: ignore[return-value]


def make_mesh(shape: tuple[int, int, int]) -> Mesh:
    """A mesh over all devices (of every process), laid out for the physical topology."""
    try:
        devices = mesh_utils.create_device_mesh(shape, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError):
        devices = np.array(jax.devices()).reshape(shape)  # CPU and unusual topologies
    return Mesh(devices, MESH_AXES)


def batch_spec(ndim: int) -> PartitionSpec:
    """Leading (batch) dimension split over the data and expert axes."""
    return PartitionSpec(BATCH_AXES, *([None] * (ndim - 1)))
