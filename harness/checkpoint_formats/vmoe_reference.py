"""V-MoE reference checkpoints (google-research/vmoe): PREFIX.index + PREFIX.data-nnnnn-of-NNNNN.

The arrays are assembled on the host from their chunks, whatever mesh wrote them, so the
caller can place them on any mesh whose 'expert' axis divides the number of experts.

Checkpoints written before vmoe's index version '20220622' number their chunks in the order of
the tree that was saved; this reads them in sorted-key order, which is that order whenever the
saved tree was a plain dict of params (as the published ones are).
"""

import msgpack
import numpy as np

from harness import storage
from harness.checkpoint_formats import flax_vit, vmoe_coverage, vmoe_msgpack
from harness.checkpoint_formats import reading as files
from harness.errors import UsageError, one_line

INDEX_SUFFIX = ".index"
PARAMS_PREFIX = "params/"
KNOWN_VERSIONS = (None, "20220622")
ENCODER_SCOPE = "Encoder"
POSITION_EMBEDDING = f"{ENCODER_SCOPE}/posembed_input/pos_embedding"
INDEX_LIMIT = 256 * 2**20  # an index lists slices, not values: a 15B model's is a few MB


def checkpoint_prefix(path: str) -> str:
    """Accepts the prefix itself or its .index file."""
    return path[: -len(INDEX_SUFFIX)] if path.endswith(INDEX_SUFFIX) else path


def _shard_path(prefix: str, shard: int, shard_count: int) -> str:
    return f"{prefix}.data-{shard:05d}-of-{shard_count:05d}"


def read_arrays(path: str, params_only: bool = True) -> dict[str, np.ndarray]:
    """The checkpoint's arrays by their '/'-joined state-dict names, floats as float32.

    With `params_only`, a whole train state (params, opt_state, step, ...) gives just its
    params, without the 'params/' prefix, and the shards holding nothing else are not read.
    Every element of every array must come from exactly one chunk (vmoe_coverage.py), and
    damaged files are one UsageError line, never a traceback.
    """
    prefix = checkpoint_prefix(path)
    index_path = prefix + INDEX_SUFFIX
    if not storage.exists(index_path):
        raise UsageError(f"{index_path} does not exist; give the V-MoE checkpoint prefix or .index")
    try:
        return _read_arrays(prefix, params_only)
    except UsageError:
        raise
    except (
        msgpack.UnpackException,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        IndexError,
        OverflowError,
        RecursionError,
        MemoryError,
    ) as error:
        raise UsageError(
            f"{prefix} is not a readable V-MoE checkpoint ({one_line(error)[:200]}); give the "
            "prefix of a checkpoint vmoe wrote, with its .index and every data shard"
        ) from error


def _read_index(prefix: str) -> tuple[int, dict[int, tuple[str, vmoe_msgpack.IndexInfo]]]:
    """(shard count, {leaf number: (name, IndexInfo)} of every leaf, wanted or not)."""
    index_path = prefix + INDEX_SUFFIX
    index = vmoe_msgpack.unpack(files.read_bytes(index_path, INDEX_LIMIT))
    if not isinstance(index, dict) or not isinstance(index.get("index"), dict):
        raise ValueError("its index is not a map with an 'index' tree")
    version = index.get("version")
    if version not in KNOWN_VERSIONS:
        raise UsageError(
            f"{index_path} has index version {version!r}, which this reader does not know; "
            f"known: {KNOWN_VERSIONS[1:]}"
        )
    shard_count = index.get("shard_count")
    if not isinstance(shard_count, int) or isinstance(shard_count, bool) or shard_count < 1:
        raise ValueError(f"its shard_count {shard_count!r} is not a positive integer")
    # Leaf numbers count every leaf of the index, wanted or not.
    leaves = dict(enumerate(vmoe_msgpack.index_leaves(index["index"])))
    for name, info in leaves.values():
        shape = info.global_shape.shape
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
            raise ValueError(f"array {name} has shape {shape!r}, not sizes >= 0")
        if not all(isinstance(s, int) and 0 <= s < shard_count for s in info.shards):
            raise ValueError(f"array {name} names shards {info.shards!r} of {shard_count}")
    return shard_count, leaves


def _read_arrays(prefix: str, params_only: bool) -> dict[str, np.ndarray]:
    shard_count, leaves = _read_index(prefix)
    if params_only and any(name.startswith(PARAMS_PREFIX) for name, _ in leaves.values()):
        leaves = {
            leaf: (name[len(PARAMS_PREFIX) :], info)
            for leaf, (name, info) in leaves.items()
            if name.startswith(PARAMS_PREFIX)
        }
    chunks: dict[int, list] = {leaf: [] for leaf in leaves}
    for shard in sorted({s for _, info in leaves.values() for s in info.shards}):
        shard_path = _shard_path(prefix, shard, shard_count)
        if not storage.exists(shard_path):
            raise UsageError(f"{shard_path} is missing; copy every data shard of the checkpoint")
        content = vmoe_msgpack.unpack(files.read_bytes(shard_path))
        for leaf, flat, global_slice in vmoe_msgpack.array_chunks(content):
            if leaf not in chunks:
                continue
            name, info = leaves[leaf]
            box = vmoe_coverage.slice_box(global_slice, info.global_shape.shape)
            vmoe_coverage.check_chunk(box, flat, info.global_shape.dtype)
            chunks[leaf].append((box, flat))
    for leaf, (name, info) in leaves.items():
        problem = vmoe_coverage.coverage_problem(
            info.global_shape.shape, [box for box, _ in chunks[leaf]]
        )
        if problem:
            raise UsageError(
                f"V-MoE checkpoint {prefix}: array {name} is not covered exactly once: "
                f"{problem}; copy the checkpoint again, every data shard whole"
            )
    # Only now, with every element accounted for by data that is really there, allocate.
    return {name: _float32(_assemble(info, chunks[leaf])) for leaf, (name, info) in leaves.items()}


def _assemble(info: vmoe_msgpack.IndexInfo, chunks: list) -> np.ndarray:
    array = np.empty(info.global_shape.shape, info.global_shape.dtype)
    for box, flat in chunks:
        if flat is not None:
            region = tuple(slice(start, stop) for start, stop in box)
            array[region] = flat.reshape(array[region].shape)
    return array


def _float32(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "f" or array.dtype.name == "bfloat16":
        return array.astype(np.float32)
    return array


def convert(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors by our param path, our path -> checkpoint name)."""
    return convert_arrays(read_arrays(path))


def convert_arrays(tensors: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """`convert` of params already read: flax names relative to the model root."""
    tensors = dict(tensors)
    origins = {}
    if POSITION_EMBEDDING in tensors:  # V-MoE adds it after the class token, as we do
        tensors["pos_embedding"] = tensors.pop(POSITION_EMBEDDING)
        origins["pos_embedding"] = POSITION_EMBEDDING
    return flax_vit.to_our_paths(tensors, ENCODER_SCOPE, origins)
