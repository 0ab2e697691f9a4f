"""Decodes the msgpack files of V-MoE's sharded checkpoints without depending on the vmoe repo.

Format (google-research/vmoe, vmoe/checkpoints/{serialization,partitioned,types}.py):
  PREFIX.index                 msgpack {'shard_count': int, 'index': tree of IndexInfo,
                               'version': '20220622' (absent in checkpoints written before)}
  PREFIX.data-00000-of-0000N   msgpack {'__msgpack_array_chunk_a87ca2__': True,
                               '<leaf number>': [[flat sub-chunks..., ], SliceNd], ...]}
The leaf number is the leaf's position when the index tree is flattened like JAX flattens a
dict (keys sorted). Each array is stored as chunks, each the flattened contents of one global
slice of it, possibly split into sub-chunks and spread over the data shards.

vmoe extends flax's msgpack encoding with its own ext types; those are decoded here.
"""

import dataclasses
import enum
from collections.abc import Iterator
from typing import Any

import ml_dtypes
import msgpack
import numpy as np

ARRAY_CHUNKS_MAGIC_KEY = "__msgpack_array_chunk_a87ca2__"

SliceNd = tuple[slice, ...]


class ExtType(enum.IntEnum):
    """vmoe's `serialization._MsgpackExtType` codes (1-3 are flax's own)."""

    NDARRAY = 1
    NATIVE_COMPLEX = 2
    NPSCALAR = 3
    SHAPED_ARRAY = 4
    SLICE = 5
    SLICE_ND = 6
    SLICE_ND_ARRAY = 7
    INDEX_INFO = 8


@dataclasses.dataclass(frozen=True)
class GlobalShape:
    """What vmoe stores as a jax ShapedArray: the whole array's shape and dtype."""

    shape: tuple[int, ...]
    dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class IndexInfo:
    """Where one array's chunks are: their global slices, and the data shard holding each."""

    global_shape: GlobalShape
    global_slices: tuple[SliceNd, ...]
    shards: tuple[int, ...]


def _dtype(name: bytes | str) -> np.dtype:
    name = name.decode() if isinstance(name, bytes) else name
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def _ndarray(data: bytes) -> np.ndarray:
    shape, dtype_name, buffer = msgpack.unpackb(data, raw=True)
    return np.frombuffer(buffer, dtype=_dtype(dtype_name)).reshape(shape)


def _shaped_array(data: bytes) -> GlobalShape:
    shape, dtype_name, _weak_type, _ = msgpack.unpackb(data, raw=True)
    return GlobalShape(tuple(shape), _dtype(dtype_name))


def _slice(data: bytes) -> slice:
    start, stop, step = msgpack.unpackb(data, raw=True)
    return slice(start, stop, step)


def _slice_nd(data: bytes) -> SliceNd:
    return tuple(_slice(s) for s in msgpack.unpackb(data, raw=True))


def _index_info(data: bytes) -> IndexInfo:
    global_shape, global_slices, shards = msgpack.unpackb(data, raw=True)
    return IndexInfo(
        global_shape=_shaped_array(global_shape),
        global_slices=tuple(_slice_nd(s) for s in global_slices),
        shards=tuple(shards),
    )


def _ext_hook(code: int, data: bytes) -> Any:
    if code == ExtType.NDARRAY:
        return _ndarray(data)
    if code == ExtType.NPSCALAR:
        return _ndarray(data)[()]
    if code == ExtType.NATIVE_COMPLEX:
        real, imag = msgpack.unpackb(data)
        return complex(real, imag)
    if code == ExtType.SHAPED_ARRAY:
        return _shaped_array(data)
    if code == ExtType.SLICE:
        return _slice(data)
    if code == ExtType.SLICE_ND:
        return _slice_nd(data)
    if code == ExtType.INDEX_INFO:
        return _index_info(data)
    # SLICE_ND_ARRAY appears in no checkpoint file; anything else is not ours to interpret.
    return msgpack.ExtType(code, data)


def unpack(data: bytes) -> Any:
    """Decodes one vmoe checkpoint file (index or data shard) into Python objects."""
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)


def index_leaves(tree: Any, prefix: str = "") -> Iterator[tuple[str, IndexInfo]]:
    """('a/b/c', IndexInfo) in JAX's dict flattening order, which numbers the data chunks."""
    if isinstance(tree, dict):
        for key in sorted(tree):
            yield from index_leaves(tree[key], f"{prefix}{key}/")
    elif isinstance(tree, IndexInfo):
        yield prefix.rstrip("/"), tree


def array_chunks(shard: Any) -> Iterator[tuple[int, np.ndarray, SliceNd]]:
    """(leaf number, the chunk's flat contents, its global slice as stored) for each chunk of
    a data shard. The slice is not checked here: the reader checks it against the array's
    shape and every other chunk (vmoe_coverage.py) before anything is assembled."""
    if not isinstance(shard, dict) or not shard.get(ARRAY_CHUNKS_MAGIC_KEY):
        raise ValueError("not a V-MoE data shard (no array-chunks marker)")
    for key, chunks in shard.items():
        if key == ARRAY_CHUNKS_MAGIC_KEY:
            continue
        for subchunks, global_slice in chunks:
            if not all(isinstance(c, np.ndarray) for c in subchunks):
                raise ValueError(f"leaf {key!r} has a chunk that is not arrays")
            flat = np.concatenate([c.reshape(-1) for c in subchunks]) if subchunks else None
            yield int(key), flat, global_slice
