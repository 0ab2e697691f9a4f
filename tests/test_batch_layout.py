"""Which batch rows each process feeds, for meshes laid over processes in different ways.

The 8 simulated devices of this process are grouped into pretend processes (`process_of`), so
every layout is checked without starting any; tests/test_multiprocess.py runs real ones.
"""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding

from harness.runtime import batch_layout
from harness.runtime.mesh import batch_spec, make_mesh

# make_mesh lays CPU devices out in id order: device id = 4 * data + 2 * expert + model.
MESH = (2, 2, 2)


def _sharding(ndim: int = 1) -> NamedSharding:
    return NamedSharding(make_mesh(MESH), batch_spec(ndim))


def _shards(process_of, processes: int) -> list[batch_layout.InputShard]:
    sharding = _sharding()
    return [
        batch_layout.input_shard(sharding, p, lambda d: process_of(d.id)) for p in range(processes)
    ]


def test_processes_along_model_read_the_same_shard_of_the_whole_batch():
    shards = _shards(lambda i: i % 2, 2)  # each process: one device of every model pair
    assert [(s.index, s.count) for s in shards] == [(0, 1), (0, 1)]
    np.testing.assert_array_equal(shards[1].rows(16), np.arange(16))


def test_processes_along_data_read_disjoint_halves():
    shards = _shards(lambda i: i // 4, 2)
    assert [(s.index, s.count) for s in shards] == [(0, 2), (1, 2)]
    np.testing.assert_array_equal(shards[1].rows(16), np.arange(8, 16))


def test_one_process_per_batch_shard_reads_one_quarter():
    shards = _shards(lambda i: i // 2, 4)
    assert [(s.index, s.count) for s in shards] == [(p, 4) for p in range(4)]
    np.testing.assert_array_equal(shards[2].rows(8), [4, 5])


def test_a_process_may_hold_rows_that_are_not_contiguous():
    # Processes split along 'expert': process 0 holds batch shards 0 and 2 of 4.
    shards = _shards(lambda i: (i // 2) % 2, 2)
    assert [(s.index, s.count) for s in shards] == [(0, 2), (1, 2)]
    np.testing.assert_array_equal(shards[0].rows(8), [0, 1, 4, 5])
    # Each device's rows of the global batch come from the right place of its process's batch.
    sharding, batch = _sharding(), np.arange(8) * 10
    for device, index in sharding.devices_indices_map((8,)).items():
        shard = shards[(device.id // 2) % 2]
        local = batch[shard.rows(8)]
        np.testing.assert_array_equal(local[shard.local_slice(index[0], 8)], batch[index])


def test_overlapping_parts_are_refused():
    with pytest.raises(ValueError, match="overlapping or unequal parts of the batch"):
        _shards(lambda i: 0 if i == 0 else 1, 2)


def test_global_arrays_place_the_local_batch_by_the_sharding():
    shard = batch_layout.input_shard(_sharding())  # this one real process: everything
    local = {
        "image": np.arange(8 * 3, dtype=np.float32).reshape(8, 3, 1, 1),
        "label": np.arange(8, dtype=np.int32),
    }
    shardings = {"image": _sharding(4), "label": _sharding(1)}
    arrays = batch_layout.global_arrays(local, shardings, shard)
    for key, value in local.items():
        assert arrays[key].sharding == shardings[key]
        np.testing.assert_array_equal(jax.device_get(arrays[key]), value)
        # Rows 2:4 (batch shard 1) live on the devices at data 0, expert 1.
        on_device = {s.device.id: np.asarray(s.data) for s in arrays[key].addressable_shards}
        np.testing.assert_array_equal(on_device[2], value[2:4])
        np.testing.assert_array_equal(on_device[3], value[2:4])


def test_batch_that_does_not_split_into_the_shards_is_refused():
    shard = batch_layout.input_shard(_sharding())
    with pytest.raises(ValueError, match=r"global batch 6 does not split .* 4 batch shards"):
        shard.rows(6)
