"""A numpy forward pass of timm's VisionTransformer from its state dict, to check exported
safetensors files against what timm would compute without needing torch.

Followed: huggingface/pytorch-image-models timm/models/vision_transformer.py
(`forward_features`, `_pos_embed`, `Attention.forward`: qkv reshaped to (B, N, 3, heads,
head_dim); `pool`: token 0 or the mean over tokens past the prefix tokens), timm/layers/mlp.py
(`Mlp`: fc1, act, fc2) and torch's conventions: Linear y = x W^T + b, Conv2d weights OIHW.
MoE blocks follow harness/exports/timm_layout.py's naming: a bias-free router and per-expert
`Mlp`s, each token's top-k experts weighted by their softmax scores (no capacity drops).
"""

import numpy as np

from tests.reference_vit import _gelu, _softmax

State = dict[str, np.ndarray]


def _linear(x: np.ndarray, state: State, name: str) -> np.ndarray:
    y = x @ state[f"{name}.weight"].T
    return y + state[f"{name}.bias"] if f"{name}.bias" in state else y


def _layer_norm(x: np.ndarray, state: State, name: str) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-6) * state[f"{name}.weight"] + state[f"{name}.bias"]


def _attention(x: np.ndarray, state: State, name: str, heads: int) -> np.ndarray:
    b, n, c = x.shape
    qkv = _linear(x, state, f"{name}.qkv").reshape(b, n, 3, heads, c // heads)
    q, k, v = qkv.transpose(2, 0, 3, 1, 4)  # each [B, heads, N, head_dim]
    attention = _softmax(q @ k.transpose(0, 1, 3, 2) * (c // heads) ** -0.5)
    mixed = (attention @ v).transpose(0, 2, 1, 3).reshape(b, n, c)
    return _linear(mixed, state, f"{name}.proj")


def _mlp(x: np.ndarray, state: State, name: str) -> np.ndarray:
    return _linear(_gelu(_linear(x, state, f"{name}.fc1")), state, f"{name}.fc2")


def _moe(x: np.ndarray, state: State, name: str, k: int) -> np.ndarray:
    gates = _softmax(_linear(x, state, f"{name}.router"))
    top = np.argsort(-gates, axis=-1)[..., :k]
    out = np.zeros_like(x)
    for e in range(gates.shape[-1]):
        chosen = (top == e).any(-1, keepdims=True)
        expert = _mlp(x, state, f"{name}.experts.{e}")
        out += np.where(chosen, gates[..., e : e + 1] * expert, 0.0)
    return out


def _patch_embed(images: np.ndarray, state: State) -> np.ndarray:
    """Conv2d with stride = kernel size, on NCHW images, flattened to [B, N, D]."""
    weight = state["patch_embed.proj.weight"]  # [D, C, p, p]
    p = weight.shape[-1]
    b, c, h, w = images.shape
    patches = images.reshape(b, c, h // p, p, w // p, p)
    x = np.einsum("bchpwq,dcpq->bhwd", patches, weight) + state["patch_embed.proj.bias"]
    return x.reshape(b, -1, x.shape[-1])


def logits(
    state: State, images_nchw: np.ndarray, *, heads: int, global_pool: str, k: int = 2
) -> np.ndarray:
    x = _patch_embed(images_nchw, state)
    if "cls_token" in state:
        x = np.concatenate([np.tile(state["cls_token"], (x.shape[0], 1, 1)), x], axis=1)
    x = x + state["pos_embed"]
    depth = 1 + max(int(name.split(".")[1]) for name in state if name.startswith("blocks."))
    for i in range(depth):
        block = f"blocks.{i}"
        x = x + _attention(_layer_norm(x, state, f"{block}.norm1"), state, f"{block}.attn", heads)
        y = _layer_norm(x, state, f"{block}.norm2")
        moe = f"{block}.mlp.router.weight" in state
        x = x + (_moe(y, state, f"{block}.mlp", k) if moe else _mlp(y, state, f"{block}.mlp"))
    x = _layer_norm(x, state, "norm")
    pooled = x[:, 0] if global_pool == "token" else x.mean(axis=1)
    return _linear(pooled, state, "head")
