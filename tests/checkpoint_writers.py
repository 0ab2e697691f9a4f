"""Writers of tiny checkpoints in each external format, laid out as the reference repos lay
them out, from the neutral weights of tests/reference_vit.py.

Layouts followed:
  vision_transformer  vit_jax/models_vit.py module names; vit_jax/checkpoint.py `save`/`load`
                      (flat '/'-joined npz); the original release's pre-Linen numbering.
  big_vision          big_vision/models/vit.py (posemb at the root, scan=True stacking);
                      big_vision/utils.py `load_params` ('params/' prefix, bfloat16 as 'V2').
  V-MoE               vmoe/nn/vit_moe.py names; vmoe/checkpoints/{serialization,partitioned,
                      types}.py for the .index / .data-nnnnn-of-NNNNN msgpack files.
"""

from collections.abc import Iterator
from typing import Any

import ml_dtypes
import msgpack
import numpy as np

from tests.reference_vit import Weights

Flat = dict[str, np.ndarray]


def _dense(prefix: str, p: dict[str, np.ndarray]) -> Flat:
    return {f"{prefix}/{name}": value for name, value in p.items()}


def _flax_names(
    weights: Weights,
    *,
    encoder: str,
    posemb: str,
    norms: tuple[str, str],
    attention: str,
    mlp: str,
) -> Flat:
    flat: Flat = {**_dense("embedding", weights["embedding"]), posemb: weights["posemb"]}
    for optional in ("cls",):
        if optional in weights:
            flat[optional] = weights[optional]
    for i, block in enumerate(weights["blocks"]):
        scope = f"{encoder}/encoderblock_{i}"
        flat |= _dense(f"{scope}/{norms[0]}", block["norm1"])
        flat |= _dense(f"{scope}/{norms[1]}", block["norm2"])
        for projection, p in block["attention"].items():
            flat |= _dense(f"{scope}/{attention}/{projection}", p)
        if "mlp" in block:
            for dense, p in block["mlp"].items():
                flat |= _dense(f"{scope}/{mlp}/{dense}", p)
        else:
            flat[f"{scope}/Moe/Router/dense/kernel"] = block["moe"]["router"]
            for dense in ("Dense_0", "Dense_1"):
                flat |= _dense(f"{scope}/Moe/Mlp/{dense}", block["moe"][dense])
    flat |= _dense(f"{encoder}/encoder_norm", weights["encoder_norm"])
    for head in ("pre_logits", "head"):
        if head in weights:
            flat |= _dense(head, weights[head])
    return flat


def vit_npz_names(weights: Weights, pre_linen: bool) -> Flat:
    """vision_transformer names; pre-Linen flax numbered a block's submodules together."""
    return _flax_names(
        weights,
        encoder="Transformer",
        posemb="Transformer/posembed_input/pos_embedding",
        norms=("LayerNorm_0", "LayerNorm_2") if pre_linen else ("LayerNorm_0", "LayerNorm_1"),
        attention=f"MultiHeadDotProductAttention_{1 if pre_linen else 0}",
        mlp="MlpBlock_3" if pre_linen else "MlpBlock_0",
    )


def big_vision_names(weights: Weights, scan: bool, prefix: str = "") -> Flat:
    """big_vision names: posemb at the root; with scan, one encoderblock with a depth axis."""
    flat = _flax_names(
        weights,
        encoder="Transformer",
        posemb="pos_embedding",
        norms=("LayerNorm_0", "LayerNorm_1"),
        attention="MultiHeadDotProductAttention_0",
        mlp="MlpBlock_0",
    )
    if scan:
        depth = len(weights["blocks"])
        stacked: Flat = {}
        for name in [n for n in flat if n.startswith("Transformer/encoderblock_0/")]:
            rest = name.removeprefix("Transformer/encoderblock_0/")
            stacked[f"Transformer/encoderblock/{rest}"] = np.stack(
                [flat.pop(f"Transformer/encoderblock_{i}/{rest}") for i in range(depth)]
            )
        flat |= stacked
    return {prefix + name: value for name, value in flat.items()}


def vmoe_names(weights: Weights) -> Flat:
    """V-MoE names: the 'Encoder' scope, 'SelfAttention', 'Mlp' and 'Moe' blocks."""
    return _flax_names(
        weights,
        encoder="Encoder",
        posemb="Encoder/posembed_input/pos_embedding",
        norms=("LayerNorm_0", "LayerNorm_1"),
        attention="SelfAttention",
        mlp="Mlp",
    )


def write_npz(path: str, flat: Flat, bfloat16: bool = False) -> None:
    """np.savez, as both repos save; bfloat16 arrays end up as numpy 'V2' records."""
    if bfloat16:
        flat = {name: value.astype(ml_dtypes.bfloat16) for name, value in flat.items()}
    np.savez(path, **flat)


# --- V-MoE: msgpack with vmoe's ext types (serialization._MsgpackExtType). ---

NDARRAY, SHAPED_ARRAY, SLICE, SLICE_ND, INDEX_INFO = 1, 4, 5, 6, 8
ARRAY_CHUNKS_MAGIC_KEY = "__msgpack_array_chunk_a87ca2__"
VERSION_V1 = "20220622"


def _packb(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _ndarray_ext(x: np.ndarray) -> msgpack.ExtType:
    return msgpack.ExtType(NDARRAY, _packb((x.shape, x.dtype.name, x.tobytes("C"))))


def _slice_bytes(s: slice) -> bytes:
    return _packb((s.start, s.stop, s.step))


def _slice_nd_bytes(slices: tuple[slice, ...]) -> bytes:
    return _packb(tuple(_slice_bytes(s) for s in slices))


def _index_info_ext(x: np.ndarray, slices: list[tuple[slice, ...]], shards: list[int]) -> Any:
    shaped_array = _packb((x.shape, x.dtype.name, False, {}))
    payload = _packb((shaped_array, tuple(_slice_nd_bytes(s) for s in slices), tuple(shards)))
    return msgpack.ExtType(INDEX_INFO, payload)


def _nest(flat: Flat) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        *scopes, leaf = name.split("/")
        node = tree
        for scope in scopes:
            node = node.setdefault(scope, {})
        node[leaf] = value
    return tree


def _sorted_leaves(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
    """JAX's dict flattening order (sorted keys), which numbers the chunks."""
    for key in sorted(tree):
        if isinstance(tree[key], dict):
            yield from _sorted_leaves(tree[key], f"{prefix}{key}/")
        else:
            yield prefix + key, tree[key]


def _chunk_slices(shape: tuple[int, ...]) -> list[tuple[slice, ...]]:
    """Two chunks along the first axis where it splits, as an 'expert'-sharded array would be."""
    full = tuple(slice(0, n) for n in shape)
    if not shape or shape[0] < 2:
        return [full]
    half = shape[0] // 2
    return [(slice(0, half), *full[1:]), (slice(half, shape[0]), *full[1:])]


def write_vmoe(prefix: str, state: Flat, num_shards: int = 2, versioned: bool = True) -> None:
    """Writes `state` (flat '/'-names) as PREFIX.index + PREFIX.data-0000i-of-0000N, spreading
    chunks over the shards and splitting each chunk into sub-chunks of at most 7 items."""
    tree = _nest(state)
    shard_contents: list[dict[str, Any]] = [
        {ARRAY_CHUNKS_MAGIC_KEY: True} for _ in range(num_shards)
    ]
    index_leaves = {}
    next_shard = 0
    for leaf, (name, value) in enumerate(_sorted_leaves(tree)):
        slices = _chunk_slices(value.shape)
        shards = []
        for chunk_slice in slices:
            flat_chunk = value[chunk_slice].reshape(-1)
            subchunks = [_ndarray_ext(flat_chunk[i : i + 7]) for i in range(0, flat_chunk.size, 7)]
            encoded_slice = msgpack.ExtType(SLICE_ND, _slice_nd_bytes(chunk_slice))
            shard_contents[next_shard].setdefault(str(leaf), []).append([subchunks, encoded_slice])
            shards.append(next_shard)
            next_shard = (next_shard + 1) % num_shards
        index_leaves[name] = _index_info_ext(value, slices, shards)
    index: dict[str, Any] = {"shard_count": num_shards, "index": _nest(index_leaves)}
    if versioned:
        index["version"] = VERSION_V1
    with open(prefix + ".index", "wb") as f:
        f.write(_packb(index))
    for shard, content in enumerate(shard_contents):
        with open(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}", "wb") as f:
            f.write(_packb(content))
