"""A numpy forward pass of the flax ViT family, written from the reference model code, to check
imported weights against what the checkpoint's own code base would compute.

Followed: vision_transformer vit_jax/models_vit.py (class token, then position embedding),
big_vision big_vision/models/vit.py (position embedding, then class token; 'gap' pooling),
vmoe vmoe/nn/vit_moe.py + vmoe/nn/routing.py (top-k of softmax(x W) gates, bias-free router).
The weights are a neutral nested dict that tests/checkpoint_writers.py lays out per format.
"""

from typing import Any

import numpy as np

Weights = dict[str, Any]


def random_weights(
    seed: int,
    *,
    patch_size: int,
    channels: int,
    width: int,
    depth: int,
    mlp_dims: int,
    heads: int,
    classes: int,
    position_rows: int,
    class_token: bool,
    pre_logits: bool,
    moe_blocks: tuple[int, ...] = (),
    experts: int = 0,
) -> Weights:
    """Random weights of a ViT (V-MoE where `moe_blocks` is set), O(1) so errors show."""
    rng = np.random.default_rng(seed)

    def normal(*shape: int, scale: float = 0.3) -> np.ndarray:
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    def dense(*shape: int) -> dict[str, np.ndarray]:
        return {"kernel": normal(*shape), "bias": normal(shape[-1], scale=0.1)}

    def norm() -> dict[str, np.ndarray]:
        # Scales away from 1, so a missed `1 + scale` convention changes the logits.
        return {"scale": 1.0 + normal(width), "bias": normal(width, scale=0.1)}

    head_dim = width // heads
    blocks = []
    for index in range(depth):
        attention = {
            name: {"kernel": normal(width, heads, head_dim), "bias": normal(heads, head_dim)}
            for name in ("query", "key", "value")
        }
        attention["out"] = {"kernel": normal(heads, head_dim, width), "bias": normal(width)}
        block = {"norm1": norm(), "attention": attention, "norm2": norm()}
        if index in moe_blocks:
            block["moe"] = {
                "router": normal(width, experts, scale=1.0),
                "Dense_0": {
                    "kernel": normal(experts, width, mlp_dims),
                    "bias": normal(experts, mlp_dims),
                },
                "Dense_1": {
                    "kernel": normal(experts, mlp_dims, width),
                    "bias": normal(experts, width),
                },
            }
        else:
            block["mlp"] = {"Dense_0": dense(width, mlp_dims), "Dense_1": dense(mlp_dims, width)}
        blocks.append(block)
    weights = {
        "embedding": {
            "kernel": normal(patch_size, patch_size, channels, width),
            "bias": normal(width),
        },
        "posemb": normal(1, position_rows, width),
        "blocks": blocks,
        "encoder_norm": norm(),
        "head": dense(width, classes),
    }
    if class_token:
        weights["cls"] = normal(1, 1, width)
    if pre_logits:
        weights["pre_logits"] = dense(width, width)
    return weights


def _layer_norm(x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-6) * p["scale"] + p["bias"]


def _gelu(x: np.ndarray) -> np.ndarray:
    """flax.linen.gelu's default, the tanh approximation."""
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _attention(x: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    q, k, v = (
        np.einsum("btd,dnh->btnh", x, p[n]["kernel"]) + p[n]["bias"]
        for n in ("query", "key", "value")
    )
    logits = np.einsum("btnh,bsnh->bnts", q / np.sqrt(q.shape[-1]), k)
    mixed = np.einsum("bnts,bsnh->btnh", _softmax(logits), v)
    return np.einsum("btnh,nhd->btd", mixed, p["out"]["kernel"]) + p["out"]["bias"]


def _mlp(x: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    hidden = _gelu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    return hidden @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]


def _moe(x: np.ndarray, p: dict[str, Any], k: int) -> np.ndarray:
    """Every token's top-k experts weighted by their softmax gates (no capacity drops)."""
    gates = _softmax(x @ p["router"])  # [B, T, E]
    out = np.zeros_like(x)
    top = np.argsort(-gates, axis=-1)[..., :k]
    for e in range(gates.shape[-1]):
        expert = {n: {m: p[n][m][e] for m in ("kernel", "bias")} for n in ("Dense_0", "Dense_1")}
        chosen = (top == e).any(-1, keepdims=True)
        out += np.where(chosen, gates[..., e : e + 1] * _mlp(x, expert), 0.0)
    return out


def logits(
    weights: Weights,
    images: np.ndarray,
    *,
    posemb_before_class_token: bool = False,
    k: int = 2,
) -> np.ndarray:
    """[B, H, W, C] images -> [B, classes] logits. Token pooling when weights have 'cls'."""
    kernel = weights["embedding"]["kernel"]
    p = kernel.shape[0]
    b, h, w, c = images.shape
    patches = images.reshape(b, h // p, p, w // p, p, c)
    x = np.einsum("bhawvc,avcd->bhwd", patches, kernel) + weights["embedding"]["bias"]
    x = x.reshape(b, -1, x.shape[-1])
    if posemb_before_class_token:
        x = x + weights["posemb"]
    if "cls" in weights:
        x = np.concatenate([np.tile(weights["cls"], (b, 1, 1)), x], axis=1)
    if not posemb_before_class_token:
        x = x + weights["posemb"]
    for block in weights["blocks"]:
        x = x + _attention(_layer_norm(x, block["norm1"]), block["attention"])
        y = _layer_norm(x, block["norm2"])
        x = x + (_moe(y, block["moe"], k) if "moe" in block else _mlp(y, block["mlp"]))
    x = _layer_norm(x, weights["encoder_norm"])
    x = x[:, 0] if "cls" in weights else x.mean(axis=1)
    if "pre_logits" in weights:
        x = np.tanh(x @ weights["pre_logits"]["kernel"] + weights["pre_logits"]["bias"])
    return x @ weights["head"]["kernel"] + weights["head"]["bias"]
