"""google-research/vision_transformer `.npz` checkpoints (the original ViT release and AugReg).

One array per parameter under its flax path, '/'-joined: 'embedding/kernel' [p, p, C, D],
'cls', 'Transformer/posembed_input/pos_embedding' [1, 1 + N, D] (class slot first: ViT adds
it after prepending the class token, as we do), 'Transformer/encoderblock_i/...',
'Transformer/encoder_norm', optional 'pre_logits', 'head'. The original release was written
by pre-Linen flax (LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3);
flax_vit reads both numberings.
"""

import numpy as np

from harness.checkpoint_formats import flax_vit, npz_reading

ENCODER_SCOPE = "Transformer"
POSITION_EMBEDDING = f"{ENCODER_SCOPE}/posembed_input/pos_embedding"


def looks_like(names: set[str]) -> bool:
    """True for this layout: the position embedding inside the encoder's posembed_input."""
    return POSITION_EMBEDDING in names


def convert(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors by our param path, our path -> checkpoint name)."""
    return convert_arrays(npz_reading.read_npz(path))


def convert_arrays(tensors: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """`convert` of an archive already read (detection reads it once for both npz formats)."""
    tensors = dict(tensors)
    origins = {}
    if POSITION_EMBEDDING in tensors:
        tensors["pos_embedding"] = tensors.pop(POSITION_EMBEDDING)
        origins["pos_embedding"] = POSITION_EMBEDDING
    return flax_vit.to_our_paths(tensors, ENCODER_SCOPE, origins)
