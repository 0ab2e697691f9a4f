"""big_vision `.npz` checkpoints (google-research/big_vision, models/vit.py).

Differences from vision_transformer's layout, all undone here:
  * A whole train state is saved as 'params/...' (optax) or 'opt/target/...' (flax
    optimizer); only the params are kept.
  * The position embedding 'pos_embedding' [1, N, D] is added to the patches *before* the
    class token is prepended, so the class token gets none: for token pooling our table gets
    a zero class slot, which computes the same. Older checkpoints keep it at
    'Transformer/pos_embedding' or 'Transformer/posembed_input/pos_embedding', possibly with
    the class slot already in (1 + N rows), which is our layout.
  * With scan=True all blocks are one 'Transformer/encoderblock/...' whose arrays have a
    leading depth axis; they are split into encoderblock_0, encoderblock_1, ...
"""

import math

import numpy as np

from harness.checkpoint_formats import flax_vit, npz_reading

ENCODER_SCOPE = "Transformer"
STATE_PREFIXES = ("params/", "opt/target/")
POSITION_EMBEDDINGS = (
    "pos_embedding",
    f"{ENCODER_SCOPE}/pos_embedding",
    f"{ENCODER_SCOPE}/posembed_input/pos_embedding",
)
SCANNED_BLOCK = f"{ENCODER_SCOPE}/encoderblock/"


def looks_like(names: set[str]) -> bool:
    """True for this layout: a train-state prefix, a scanned encoder or a top-level posemb."""
    return any(
        name.startswith((*STATE_PREFIXES, SCANNED_BLOCK)) or name in POSITION_EMBEDDINGS[:2]
        for name in names
    )


def params_only(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    for prefix in STATE_PREFIXES:
        if any(name.startswith(prefix) for name in tensors):
            return {n[len(prefix) :]: a for n, a in tensors.items() if n.startswith(prefix)}
    return tensors


def unscan_blocks(tensors: dict[str, np.ndarray], origins: dict[str, str]) -> dict[str, np.ndarray]:
    """'Transformer/encoderblock/X' [depth, ...] -> 'Transformer/encoderblock_i/X' [...]."""
    unscanned = {}
    for name, value in tensors.items():
        if not name.startswith(SCANNED_BLOCK):
            unscanned[name] = value
            continue
        rest = name[len(SCANNED_BLOCK) :]
        for depth, block_value in enumerate(value):
            block_name = f"{ENCODER_SCOPE}/encoderblock_{depth}/{rest}"
            unscanned[block_name] = block_value
            origins[block_name] = f"{name}[{depth}]"
    return unscanned


def _is_square(n: int) -> bool:
    return math.isqrt(n) ** 2 == n


def with_class_slot(table: np.ndarray, has_class_token: bool) -> np.ndarray:
    """A [1, N, D] grid-only table gets a zero row for the class token, if the model has one."""
    if has_class_token and table.ndim == 3 and _is_square(table.shape[1]):
        return np.concatenate([np.zeros_like(table[:, :1]), table], axis=1)
    return table


def convert(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors by our param path, our path -> checkpoint name)."""
    return convert_arrays(npz_reading.read_npz(path))


def convert_arrays(tensors: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """`convert` of an archive already read (detection reads it once for both npz formats)."""
    origins: dict[str, str] = {}
    tensors = unscan_blocks(params_only(tensors), origins)
    for name in POSITION_EMBEDDINGS:
        if name in tensors:
            table = tensors.pop(name)
            tensors["pos_embedding"] = with_class_slot(table, "cls" in tensors)
            origins["pos_embedding"] = name
            break
    return flax_vit.to_our_paths(tensors, ENCODER_SCOPE, origins)
