"""vision_transformer's flax names -> timm's VisionTransformer state dict, plus V-MoE blocks.

The dense names and layouts are what timm's `vision_transformer._load_weights` makes of a
vision_transformer .npz (huggingface/pytorch-image-models, timm/models/vision_transformer.py):
  cls                                  -> cls_token                  [1, 1, D]
  Transformer/posembed_input/...       -> pos_embed                  [1, (1 +) N, D]
  embedding/kernel [p, p, C, D]        -> patch_embed.proj.weight    [D, C, p, p] (OIHW)
  encoderblock_i/LayerNorm_0, _2       -> blocks.i.norm1, norm2      (scale -> weight)
  query, key, value kernels [D, h, d]  -> blocks.i.attn.qkv.weight   [3 h d, D]: each
                                          flattened to [D, h d], transposed, concatenated
  query, key, value biases [h, d]      -> blocks.i.attn.qkv.bias     [3 h d]
  out/kernel [h, d, D]                 -> blocks.i.attn.proj.weight  [D, h d]
  MlpBlock_3/Dense_0, Dense_1          -> blocks.i.mlp.fc1, fc2      (kernels transposed)
  encoder_norm                         -> norm                       (applied before pooling)
  head/kernel [D, K]                   -> head.weight                [K, D]
Every Linear weight is torch's [out, in]. timm's VisionTransformer has no pre-logits layer
(checkpoint_filter_fn drops one), so a model with one is not written in this layout.

V-MoE blocks have no timm counterpart; their `mlp` becomes a router and per-expert MLPs, each
expert named and shaped like timm's own `Mlp` so it loads into one:
  Moe/Router/dense/kernel [D, E]       -> blocks.i.mlp.router.weight        [E, D] (no bias)
  Moe/Mlp/Dense_0 kernel [E, D, M]     -> blocks.i.mlp.experts.e.fc1.weight [M, D], .bias [M]
  Moe/Mlp/Dense_1 kernel [E, M, D]     -> blocks.i.mlp.experts.e.fc2.weight [D, M], .bias [D]
"""

import re
from collections.abc import Mapping

import numpy as np

from harness.exports.flax_layout import VISION_TRANSFORMER

_BLOCK = re.compile(rf"^{VISION_TRANSFORMER.encoder}/encoderblock_(\d+)/")


def _linear(kernel: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(kernel.T)


def _norm(flax: Mapping[str, np.ndarray], theirs: str, ours: str) -> dict[str, np.ndarray]:
    return {f"{ours}.weight": flax[f"{theirs}/scale"], f"{ours}.bias": flax[f"{theirs}/bias"]}


def _attention(flax: Mapping[str, np.ndarray], scope: str, ours: str) -> dict[str, np.ndarray]:
    kernels = [flax[f"{scope}/{n}/kernel"] for n in ("query", "key", "value")]
    biases = [flax[f"{scope}/{n}/bias"] for n in ("query", "key", "value")]
    out = flax[f"{scope}/out/kernel"]
    return {
        f"{ours}.qkv.weight": np.concatenate([k.reshape(k.shape[0], -1).T for k in kernels]),
        f"{ours}.qkv.bias": np.concatenate([b.reshape(-1) for b in biases]),
        f"{ours}.proj.weight": np.ascontiguousarray(out.reshape(-1, out.shape[-1]).T),
        f"{ours}.proj.bias": flax[f"{scope}/out/bias"],
    }


def _mlp(flax: Mapping[str, np.ndarray], scope: str, ours: str) -> dict[str, np.ndarray]:
    return {
        f"{ours}.fc{r + 1}.{name}": (_linear(value) if name == "weight" else value)
        for r in range(2)
        for name, value in (
            ("weight", flax[f"{scope}/Dense_{r}/kernel"]),
            ("bias", flax[f"{scope}/Dense_{r}/bias"]),
        )
    }


def _moe(flax: Mapping[str, np.ndarray], scope: str, ours: str) -> dict[str, np.ndarray]:
    tensors = {f"{ours}.router.weight": _linear(flax[f"{scope}/Router/dense/kernel"])}
    num_experts = flax[f"{scope}/Router/dense/kernel"].shape[-1]
    for e in range(num_experts):
        for r in range(2):
            tensors[f"{ours}.experts.{e}.fc{r + 1}.weight"] = _linear(
                flax[f"{scope}/Mlp/Dense_{r}/kernel"][e]
            )
            tensors[f"{ours}.experts.{e}.fc{r + 1}.bias"] = flax[f"{scope}/Mlp/Dense_{r}/bias"][e]
    return tensors


def _block(flax: Mapping[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    s, scope, ours = (
        VISION_TRANSFORMER,
        f"{VISION_TRANSFORMER.encoder}/encoderblock_{i}",
        f"blocks.{i}",
    )
    tensors = _norm(flax, f"{scope}/{s.norm1}", f"{ours}.norm1")
    tensors |= _attention(flax, f"{scope}/{s.attention}", f"{ours}.attn")
    tensors |= _norm(flax, f"{scope}/{s.norm2}", f"{ours}.norm2")
    if f"{scope}/Moe/Router/dense/kernel" in flax:
        tensors |= _moe(flax, f"{scope}/Moe", f"{ours}.mlp")
    else:
        tensors |= _mlp(flax, f"{scope}/{s.mlp}", f"{ours}.mlp")
    return tensors


def to_timm(flax: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{flax name in vision_transformer's spelling: array} -> timm state dict (numpy)."""
    encoder = VISION_TRANSFORMER.encoder
    kernel = flax["embedding/kernel"]
    tensors = {
        "patch_embed.proj.weight": np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)),
        "patch_embed.proj.bias": flax["embedding/bias"],
        "pos_embed": flax[f"{encoder}/posembed_input/pos_embedding"],
        **_norm(flax, f"{encoder}/encoder_norm", "norm"),
        "head.weight": _linear(flax["head/kernel"]),
        "head.bias": flax["head/bias"],
    }
    if "cls" in flax:
        tensors["cls_token"] = flax["cls"]
    for i in sorted({int(m.group(1)) for m in map(_BLOCK.match, flax) if m}):
        tensors |= _block(flax, i)
    return tensors
