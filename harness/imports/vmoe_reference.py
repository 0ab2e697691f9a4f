"""V-MoE reference checkpoints (google-research/vmoe): PREFIX.index + PREFIX.data-nnnnn-of-NNNNN.

The arrays are assembled on the host from their chunks, whatever mesh wrote them, so the
caller can place them on any mesh whose 'expert' axis divides the number of experts.

Checkpoints written before vmoe's index version '20220622' number their chunks in the order of
the tree that was saved; this reads them in sorted-key order, which is that order whenever the
saved tree was a plain dict of params (as the published ones are).
"""

import numpy as np

from harness import storage
from harness.errors import UsageError
from harness.imports import files, flax_vit, vmoe_msgpack

INDEX_SUFFIX = ".index"
PARAMS_PREFIX = "params/"
KNOWN_VERSIONS = (None, "20220622")
ENCODER_SCOPE = "Encoder"
POSITION_EMBEDDING = f"{ENCODER_SCOPE}/posembed_input/pos_embedding"


def checkpoint_prefix(path: str) -> str:
    """Accepts the prefix itself or its .index file."""
    return path[: -len(INDEX_SUFFIX)] if path.endswith(INDEX_SUFFIX) else path


def _shard_path(prefix: str, shard: int, shard_count: int) -> str:
    return f"{prefix}.data-{shard:05d}-of-{shard_count:05d}"


def read_arrays(path: str, params_only: bool = True) -> dict[str, np.ndarray]:
    """The checkpoint's arrays by their '/'-joined state-dict names, floats as float32.

    With `params_only`, a whole train state (params, opt_state, step, ...) gives just its
    params, without the 'params/' prefix, and the shards holding nothing else are not read.
    """
    prefix = checkpoint_prefix(path)
    index_path = prefix + INDEX_SUFFIX
    if not storage.exists(index_path):
        raise UsageError(f"{index_path} does not exist; give the V-MoE checkpoint prefix or .index")
    index = vmoe_msgpack.unpack(files.read_bytes(index_path))
    version = index.get("version")
    if version not in KNOWN_VERSIONS:
        raise UsageError(
            f"{index_path} has index version {version!r}, which this reader does not know; "
            f"known: {KNOWN_VERSIONS[1:]}"
        )
    shard_count = int(index["shard_count"])
    # Leaf numbers count every leaf of the index, wanted or not.
    leaves = dict(enumerate(vmoe_msgpack.index_leaves(index["index"])))
    if params_only and any(name.startswith(PARAMS_PREFIX) for name, _ in leaves.values()):
        leaves = {
            leaf: (name[len(PARAMS_PREFIX) :], info)
            for leaf, (name, info) in leaves.items()
            if name.startswith(PARAMS_PREFIX)
        }
    arrays = {
        leaf: np.zeros(info.global_shape.shape, info.global_shape.dtype)
        for leaf, (_, info) in leaves.items()
    }
    for shard in sorted({s for _, info in leaves.values() for s in info.shards}):
        shard_path = _shard_path(prefix, shard, shard_count)
        if not storage.exists(shard_path):
            raise UsageError(f"{shard_path} is missing; copy every data shard of the checkpoint")
        for leaf, chunk, global_slice in vmoe_msgpack.array_chunks(
            vmoe_msgpack.unpack(files.read_bytes(shard_path))
        ):
            if leaf in arrays:
                arrays[leaf][global_slice] = chunk
    return {leaves[leaf][0]: _float32(array) for leaf, array in arrays.items()}


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
