"""Which rows of the global batch each process feeds, read from the mesh.

The batch is split over ('data', 'expert') and replicated over 'model'. A process therefore
holds the rows its devices' batch shards cover: with a 'model' axis that spans processes,
several processes hold the *same* rows and must read the same examples; with 'data' across
processes they hold disjoint rows. So the input is split into as many shards as there are
distinct row sets among the processes (not into jax.process_count() shards), and each process
reads the shard of its row set. Everything here follows from the sharding's device-to-index
map, so it holds for any mesh and any device order, without communication.
"""

import dataclasses
from collections.abc import Callable, Mapping

import jax
import numpy as np
from jax.sharding import NamedSharding


@dataclasses.dataclass(frozen=True)
class InputShard:
    """The part of every global batch that one process reads and feeds.

    `blocks` are the batch shards (in units of global_batch / num_blocks rows) the process's
    devices hold, in order; `index` of `count` names the input shard the process reads, the
    same for every process holding the same blocks.
    """

    index: int
    count: int
    blocks: tuple[int, ...]
    num_blocks: int

    def rows(self, global_batch: int) -> np.ndarray:
        """Global row numbers of the process's local batch, in the order it holds them."""
        if global_batch % self.num_blocks:
            raise ValueError(
                f"global batch {global_batch} does not split into the mesh's {self.num_blocks} "
                f"batch shards; use a multiple of {self.num_blocks}"
            )
        size = global_batch // self.num_blocks
        return np.concatenate([np.arange(b * size, (b + 1) * size) for b in self.blocks])

    def local_slice(self, rows: slice, global_batch: int) -> slice:
        """Where one device's `rows` of the global batch sit in the process's local batch."""
        start, stop, _ = rows.indices(global_batch)
        size = global_batch // self.num_blocks
        if start % size or (stop - start) % size:
            raise ValueError(f"rows {start}:{stop} are not whole batch shards of {size} rows")
        # Blocks are contiguous in the local batch, in `blocks` order.
        begin = self.blocks.index(start // size) * size
        return slice(begin, begin + stop - start)


def input_shard(
    sharding: NamedSharding,
    process_index: int | None = None,
    process_of: Callable[[jax.Device], int] = lambda device: device.process_index,
) -> InputShard:
    """The input shard of `process_index` (default: this process) under the batch `sharding`.

    `process_of` maps a device to its process; tests pass another mapping to lay one process's
    simulated devices out as if they belonged to several.
    """
    process_index = jax.process_index() if process_index is None else process_index
    num_blocks = _num_batch_blocks(sharding)
    blocks_of: dict[int, set[int]] = {}
    # Asked for a batch of one row per block, each device's index is exactly its block.
    for device, index in sharding.devices_indices_map((num_blocks,)).items():
        block = index[0].start or 0
        blocks_of.setdefault(process_of(device), set()).add(block)
    row_sets = sorted({tuple(sorted(blocks)) for blocks in blocks_of.values()})
    _check_partition(row_sets, num_blocks)
    mine = tuple(sorted(blocks_of[process_index]))
    return InputShard(row_sets.index(mine), len(row_sets), mine, num_blocks)


def _num_batch_blocks(sharding: NamedSharding) -> int:
    """How many pieces the batch dimension is cut into (the product of its mesh axes)."""
    axes = sharding.spec[0] if len(sharding.spec) else None
    if axes is None:
        return 1
    names = axes if isinstance(axes, tuple) else (axes,)
    return int(np.prod([sharding.mesh.shape[name] for name in names]))


def _check_partition(row_sets: list[tuple[int, ...]], num_blocks: int) -> None:
    # Processes feed disjoint, equal parts, or the same part; anything else would need a
    # process to read examples another process also reads only in part.
    covered = sorted(block for row_set in row_sets for block in row_set)
    if covered != list(range(num_blocks)) or len({len(s) for s in row_sets}) != 1:
        raise ValueError(
            f"the mesh gives processes overlapping or unequal parts of the batch ({row_sets}); "
            "lay the mesh out so each process's devices hold whole, equal batch shards"
        )


def global_arrays(
    local: Mapping[str, np.ndarray],
    shardings: Mapping[str, NamedSharding],
    shard: InputShard,
) -> dict[str, jax.Array]:
    """Global arrays from this process's local batch, which holds rows `shard.rows(...)`."""
    return {key: _global_array(key, value, shardings[key], shard) for key, value in local.items()}


def _global_array(
    key: str, local: np.ndarray, sharding: NamedSharding, shard: InputShard
) -> jax.Array:
    global_batch = local.shape[0] * shard.count

    def piece(index: tuple[slice, ...]) -> np.ndarray:
        return local[(shard.local_slice(index[0], global_batch), *index[1:])]

    return jax.make_array_from_callback((global_batch, *local.shape[1:]), sharding, piece)
