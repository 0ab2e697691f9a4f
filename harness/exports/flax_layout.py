"""Our param paths -> the flax ViT family's names and layouts (vision_transformer, V-MoE).

The inverse of harness/checkpoint_formats/flax_vit.py, one fixed transform per tensor:
  * LayerNorm: praxis multiplies by `1 + scale`, flax by `scale`.
  * Attention output: praxis `post.w` [D, heads, head_dim] -> flax `out` [heads, head_dim, D].
  * Patch embedding: praxis's linear on flattened (row, column, channel) patches [p*p*C, D]
    -> flax's conv kernel [p, p, C, D].
  * query/key/value [D, heads, head_dim], dense kernels [in, out], the class token, the
    position embedding (class slot first, as both add it after prepending the class token)
    and MoE experts stacked on axis 0 are the same in both.

Two spellings, each its code base's own:
  VISION_TRANSFORMER  'Transformer' scope and the original release's pre-Linen numbering
                      (LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3),
                      which is what timm's `_load_weights` reads from a file without prefix.
  VMOE                vmoe/nn/vit_moe.py: 'Encoder' scope, SelfAttention, LayerNorm_0/_1, Mlp,
                      and MoE blocks as Moe/Router/dense (bias-free) + Moe/Mlp/Dense_0/_1.
"""

import dataclasses
import re
from collections.abc import Callable, Mapping

import numpy as np

from harness.errors import UsageError

Transform = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Spelling:
    """How one code base names the modules of a ViT block and the encoder around it."""

    encoder: str
    norm1: str
    attention: str
    norm2: str
    mlp: str


VISION_TRANSFORMER = Spelling(
    encoder="Transformer",
    norm1="LayerNorm_0",
    attention="MultiHeadDotProductAttention_1",
    norm2="LayerNorm_2",
    mlp="MlpBlock_3",
)
VMOE = Spelling(
    encoder="Encoder",
    norm1="LayerNorm_0",
    attention="SelfAttention",
    norm2="LayerNorm_1",
    mlp="Mlp",
)

_BLOCK = re.compile(r"^encoder/x_layers_(\d+)/(.*)$")


def _keep(x: np.ndarray) -> np.ndarray:
    return x


def _layer_norm_scale(x: np.ndarray) -> np.ndarray:
    return x + 1.0


def _attention_out(x: np.ndarray) -> np.ndarray:
    return np.transpose(x, (1, 2, 0))


def _norm(ours: str, theirs: str) -> list[tuple[str, str, Transform]]:
    return [
        (f"{ours}/scale", f"{theirs}/scale", _layer_norm_scale),
        (f"{ours}/bias", f"{theirs}/bias", _keep),
    ]


def _dense(ours: str, theirs: str) -> list[tuple[str, str, Transform]]:
    return [
        (f"{ours}/linear/w", f"{theirs}/kernel", _keep),
        (f"{ours}/bias/b", f"{theirs}/bias", _keep),
    ]


def _block_rules(spelling: Spelling, index: int) -> list[tuple[str, str, Transform]]:
    """(our path, their name, transform) for every tensor block `index` may hold."""
    ours, theirs = f"encoder/x_layers_{index}", f"{spelling.encoder}/encoderblock_{index}"
    attention = f"{theirs}/{spelling.attention}"
    rules = _norm(f"{ours}/layer_norm", f"{theirs}/{spelling.norm1}")
    rules += _norm(f"{ours}/ff_layer/layer_norm", f"{theirs}/{spelling.norm2}")
    for projection in ("query", "key", "value"):
        rules += [
            (f"{ours}/self_attention/{projection}/w", f"{attention}/{projection}/kernel", _keep),
            (f"{ours}/self_attention/{projection}/b", f"{attention}/{projection}/bias", _keep),
        ]
    rules += [
        (f"{ours}/self_attention/post/w", f"{attention}/out/kernel", _attention_out),
        (f"{ours}/self_attention/post/b", f"{attention}/out/bias", _keep),
    ]
    rules += _dense(f"{ours}/ff_layer/ffn_layer1", f"{theirs}/{spelling.mlp}/Dense_0")
    rules += _dense(f"{ours}/ff_layer/ffn_layer2", f"{theirs}/{spelling.mlp}/Dense_1")
    moe = f"{ours}/ff_layer/moe"
    rules += [
        (f"{moe}/router", f"{theirs}/Moe/Router/dense/kernel", _keep),
        (f"{moe}/wi", f"{theirs}/Moe/Mlp/Dense_0/kernel", _keep),
        (f"{moe}/bi", f"{theirs}/Moe/Mlp/Dense_0/bias", _keep),
        (f"{moe}/wo", f"{theirs}/Moe/Mlp/Dense_1/kernel", _keep),
        (f"{moe}/bo", f"{theirs}/Moe/Mlp/Dense_1/bias", _keep),
    ]
    return rules


def _top_rules(
    spelling: Spelling, patch_size: int, channels: int
) -> list[tuple[str, str, Transform]]:
    def patch_kernel(x: np.ndarray) -> np.ndarray:
        return x.reshape(patch_size, patch_size, channels, x.shape[-1])

    rules: list[tuple[str, str, Transform]] = [
        ("patch_embedding/patch_projection/linear/w", "embedding/kernel", patch_kernel),
        ("patch_embedding/patch_projection/bias/b", "embedding/bias", _keep),
        ("patch_embedding/prepend_cls_embs", "cls", _keep),
        ("position_embedding", f"{spelling.encoder}/posembed_input/pos_embedding", _keep),
    ]
    rules += _norm("final_norm", f"{spelling.encoder}/encoder_norm")
    rules += _dense("pre_logits_layer", "pre_logits")
    rules += _dense("head", "head")
    return rules


def to_flax(
    params: Mapping[str, np.ndarray], spelling: Spelling, *, patch_size: int, channels: int
) -> dict[str, np.ndarray]:
    """Our flat params (blocks unscanned) -> {flax name: array} in `spelling`.

    Raises:
      UsageError: naming a tensor that has no place in the flax ViT family (a ViT-22B or
        WideNet weight, a Soft MoE router), which the caller should have refused by family.
    """
    rules = {ours: (theirs, t) for ours, theirs, t in _top_rules(spelling, patch_size, channels)}
    blocks = {int(m.group(1)) for m in map(_BLOCK.match, params) if m}
    for index in blocks:
        rules |= {ours: (theirs, t) for ours, theirs, t in _block_rules(spelling, index)}
    unplaced = sorted(set(params) - set(rules))
    if unplaced:
        raise UsageError(
            f"{len(unplaced)} weights have no place in the flax ViT layout "
            f"({', '.join(unplaced[:3])})"
        )
    converted = {}
    for ours, value in params.items():
        theirs, transform = rules[ours]
        converted[theirs] = transform(np.asarray(value))
    return converted
