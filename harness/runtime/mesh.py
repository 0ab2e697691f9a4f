"""The device mesh every family trains on: axes ('data', 'expert', 'model').

Parameters follow their praxis split dims (experts on 'expert', wide matrices on 'model');
the batch is split over ('data', 'expert'), so expert parallelism also carries data.
"""

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, PartitionSpec

from models.specs import MESH_AXES

BATCH_AXES = ("data", "expert")


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
