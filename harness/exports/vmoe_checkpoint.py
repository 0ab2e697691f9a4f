"""Writes V-MoE's sharded checkpoint files: PREFIX.index + PREFIX.data-nnnnn-of-NNNNN.

The bytes are what vmoe's `partitioned.save_checkpoint` writes (google-research/vmoe,
vmoe/checkpoints/{partitioned,serialization,types,base}.py), so `restore_checkpoint` and
`initialize_from_vmoe` read them, and so does harness/checkpoint_formats/vmoe_reference.py:
  * the index is msgpack {'shard_count': N, 'index': the params tree with an IndexInfo
    ext (type 8) per array, 'version': '20220622'};
  * IndexInfo = packed (ShapedArray bytes (shape, dtype name, weak_type, {}), the global
    SliceNd of each chunk, the data shard holding each chunk);
  * a data shard is msgpack {'__msgpack_array_chunk_a87ca2__': True, '<leaf number>':
    [[sub-chunks, SliceNd ext (type 6)], ...]}, a leaf's number being its position when
    the index tree is flattened as JAX flattens dicts (sorted keys); sub-chunks are ndarray
    exts (type 1) of the chunk's flattened items, at most flax's MAX_CHUNK_SIZE bytes each.
Arrays are split into chunks of at most vmoe's MAX_CHUNK_BYTES along their first axis, and
each chunk goes to the data shard holding the fewest bytes so far, as vmoe balances them.
"""

from collections.abc import Iterator, Mapping
from typing import Any

import msgpack
import numpy as np

from harness.checkpoint_formats.vmoe_msgpack import ARRAY_CHUNKS_MAGIC_KEY, ExtType

VERSION = "20220622"
MAX_CHUNK_BYTES = 268_435_456  # vmoe partitioned.MAX_CHUNK_BYTES
MAX_SUBCHUNK_BYTES = 2**30  # flax.serialization.MAX_CHUNK_SIZE
SHARD_BYTES = 2**31  # how much one data shard holds before another is opened

SliceNd = tuple[slice, ...]


def _packb(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _ndarray(x: np.ndarray) -> msgpack.ExtType:
    return msgpack.ExtType(ExtType.NDARRAY, _packb((x.shape, x.dtype.name, x.tobytes("C"))))


def _slice_nd_bytes(slices: SliceNd) -> bytes:
    return _packb(tuple(_packb((s.start, s.stop, s.step)) for s in slices))


def _index_info(x: np.ndarray, slices: list[SliceNd], shards: list[int]) -> msgpack.ExtType:
    shaped_array = _packb((x.shape, x.dtype.name, False, {}))
    payload = _packb((shaped_array, tuple(_slice_nd_bytes(s) for s in slices), tuple(shards)))
    return msgpack.ExtType(ExtType.INDEX_INFO, payload)


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{'a/b': x} -> {'a': {'b': x}}."""
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        *scopes, leaf = name.split("/")
        node = tree
        for scope in scopes:
            node = node.setdefault(scope, {})
        node[leaf] = value
    return tree


def sorted_leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Leaves in JAX's dict flattening order (sorted keys at every level), which numbers them."""
    for key in sorted(tree):
        if isinstance(tree[key], dict):
            yield from sorted_leaves(tree[key], f"{prefix}{key}/")
        else:
            yield prefix + key, tree[key]


def chunk_slices(shape: tuple[int, ...], itemsize: int, max_bytes: int) -> list[SliceNd]:
    """Global slices covering an array, split along axis 0 into at most `max_bytes` each
    (a single row larger than that stays one chunk)."""
    full = tuple(slice(0, n, None) for n in shape)
    total = int(np.prod(shape, dtype=np.int64)) * itemsize
    if not shape or total <= max_bytes or shape[0] < 2:
        return [full]
    rows = max(1, max_bytes // (total // shape[0]))
    return [(slice(r, min(r + rows, shape[0]), None), *full[1:]) for r in range(0, shape[0], rows)]


def _subchunks(chunk: np.ndarray, max_bytes: int) -> list[msgpack.ExtType]:
    flat = np.ascontiguousarray(chunk).reshape(-1)
    step = max(1, max_bytes // max(flat.dtype.itemsize, 1))
    return [_ndarray(flat[i : i + step]) for i in range(0, flat.size, step)]


def encode(
    params: Mapping[str, np.ndarray],
    *,
    max_chunk_bytes: int = MAX_CHUNK_BYTES,
    shard_bytes: int = SHARD_BYTES,
) -> tuple[bytes, list[bytes]]:
    """(the index file's bytes, each data shard's bytes) for {'/'-joined name: array}."""
    leaves = [(name, np.asarray(value)) for name, value in sorted_leaves(nest(params))]
    total = sum(value.nbytes for _, value in leaves)
    shard_count = max(1, -(-total // shard_bytes))
    shard_sizes = [0] * shard_count
    shards: list[dict[str, Any]] = [{ARRAY_CHUNKS_MAGIC_KEY: True} for _ in range(shard_count)]
    index = {}
    for leaf, (name, value) in enumerate(leaves):
        slices = chunk_slices(value.shape, value.dtype.itemsize, max_chunk_bytes)
        owners = []
        for chunk_slice in slices:
            owner = min(range(shard_count), key=lambda s: (shard_sizes[s], s))
            chunk = value[chunk_slice]
            shard_sizes[owner] += chunk.nbytes
            encoded_slice = msgpack.ExtType(ExtType.SLICE_ND, _slice_nd_bytes(chunk_slice))
            entry = [_subchunks(chunk, MAX_SUBCHUNK_BYTES), encoded_slice]
            shards[owner].setdefault(str(leaf), []).append(entry)
            owners.append(owner)
        index[name] = _index_info(value, slices, owners)
    index_bytes = _packb({"shard_count": shard_count, "index": nest(index), "version": VERSION})
    return index_bytes, [_packb(shard) for shard in shards]


def shard_path(prefix: str, shard: int, shard_count: int) -> str:
    """vmoe base.add_shard_suffix of PREFIX.data."""
    return f"{prefix}.data-{shard:05d}-of-{shard_count:05d}"
