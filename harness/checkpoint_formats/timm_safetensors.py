"""timm ViT state dicts in safetensors files, as `python -m harness.export --format=safetensors`
writes them (harness/exports/timm_layout.py has the names and layouts, V-MoE blocks included).

Each timm tensor is turned back into its vision_transformer flax name and layout, and
harness/checkpoint_formats/flax_vit.py takes it from there, so every format meets our tree
through the same rules. timm's fused qkv weight [3 h d, D] does not say how many heads h it
holds; the file's `timm_kwargs` metadata does (`num_heads`), as the exporter writes it.
"""

import json
import re

import numpy as np

from harness.checkpoint_formats import flax_vit, safetensors_file
from harness.checkpoint_formats import reading as files
from harness.errors import UsageError

SUFFIX = ".safetensors"
ENCODER_SCOPE = "Transformer"
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.*)$")
_EXPERT = re.compile(r"^mlp\.experts\.(\d+)\.fc([12])\.(weight|bias)$")
_MLP = re.compile(r"^mlp\.fc([12])\.(weight|bias)$")
_ATTENTION = ("attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias")
_NORMS = {"norm1": "LayerNorm_0", "norm2": "LayerNorm_1"}


def _num_heads(metadata: dict[str, str], path: str) -> int:
    try:
        heads = json.loads(metadata["timm_kwargs"])["num_heads"]
    except (KeyError, TypeError, ValueError) as error:
        raise UsageError(
            f"{path} has no num_heads in its timm_kwargs metadata (needed to split the fused "
            "qkv weight into heads); export it with python -m harness.export"
        ) from error
    if not isinstance(heads, int) or heads < 1:
        raise UsageError(f"{path}: timm_kwargs num_heads={heads!r} must be a positive integer")
    return heads


def _linear(weight: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(weight.T)


def _attention(rest: str, value: np.ndarray, scope: str, heads: int) -> dict[str, np.ndarray]:
    attention = f"{scope}/MultiHeadDotProductAttention_0"
    if rest == "attn.qkv.weight":  # [3 h d, D] -> three [D, h, d]
        return {
            f"{attention}/{n}/kernel": part.T.reshape(part.shape[1], heads, -1)
            for n, part in zip(("query", "key", "value"), np.split(value, 3), strict=True)
        }
    if rest == "attn.qkv.bias":
        return {
            f"{attention}/{n}/bias": part.reshape(heads, -1)
            for n, part in zip(("query", "key", "value"), np.split(value, 3), strict=True)
        }
    if rest == "attn.proj.weight":  # [D, h d] -> [h, d, D]
        return {f"{attention}/out/kernel": value.T.reshape(heads, -1, value.shape[0])}
    return {f"{attention}/out/bias": value}


def _block(rest: str, value: np.ndarray, scope: str, heads: int) -> dict[str, np.ndarray] | None:
    """The flax tensor(s) of one timm block tensor; experts come back one at a time (with
    their expert number in the name) for `_stack_experts`. None: not a name we know."""
    norm, _, leaf = rest.partition(".")
    if norm in _NORMS and leaf in ("weight", "bias"):
        return {f"{scope}/{_NORMS[norm]}/{'scale' if leaf == 'weight' else 'bias'}": value}
    if rest in _ATTENTION:
        return _attention(rest, value, scope, heads)
    if rest == "mlp.router.weight":
        return {f"{scope}/Moe/Router/dense/kernel": _linear(value)}
    if match := _EXPERT.match(rest):
        expert, fc, leaf = match.groups()
        return {f"{_dense(f'{scope}/Moe/Mlp', fc, leaf)}#{expert}": _dense_value(leaf, value)}
    if match := _MLP.match(rest):
        fc, leaf = match.groups()
        return {_dense(f"{scope}/MlpBlock_0", fc, leaf): _dense_value(leaf, value)}
    return None


def _dense(mlp: str, fc: str, leaf: str) -> str:
    """timm's fc1/fc2 weight/bias -> flax's Dense_0/Dense_1 kernel/bias."""
    return f"{mlp}/Dense_{int(fc) - 1}/{'kernel' if leaf == 'weight' else 'bias'}"


def _dense_value(leaf: str, value: np.ndarray) -> np.ndarray:
    return _linear(value) if leaf == "weight" else value


def _stack_experts(tensors: dict[str, np.ndarray], origins: dict[str, str]) -> None:
    """'.../Dense_0/kernel#e' for e = 0..E-1 -> '.../Dense_0/kernel' [E, ...], in place. A gap
    in the expert numbers is left unstacked, so the strict check names it."""
    experts: dict[str, dict[int, str]] = {}
    for name in tensors:
        base, sep, number = name.partition("#")
        if sep:
            experts.setdefault(base, {})[int(number)] = name
    for base, numbered in experts.items():
        if sorted(numbered) != list(range(len(numbered))):
            continue
        tensors[base] = np.stack([tensors.pop(numbered[e]) for e in range(len(numbered))])
        origins[base] = origins.pop(numbered[0]).replace(".experts.0.", ".experts.*.")
        for e in range(1, len(numbered)):
            origins.pop(numbered[e])


def to_flax(
    state: dict[str, np.ndarray], heads: int
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors by vision_transformer flax name, flax name -> timm name). Names not known
    are kept as they are, so the strict check reports them."""
    top = {
        "cls_token": "cls",
        "pos_embed": "pos_embedding",
        "patch_embed.proj.bias": "embedding/bias",
        "norm.weight": f"{ENCODER_SCOPE}/encoder_norm/scale",
        "norm.bias": f"{ENCODER_SCOPE}/encoder_norm/bias",
        "head.bias": "head/bias",
    }
    tensors: dict[str, np.ndarray] = {}
    origins: dict[str, str] = {}
    for name, value in state.items():
        converted: dict[str, np.ndarray] | None = None
        if name in top:
            converted = {top[name]: value}
        elif name == "patch_embed.proj.weight" and value.ndim == 4:  # OIHW -> HWIO
            converted = {"embedding/kernel": value.transpose(2, 3, 1, 0)}
        elif name == "head.weight":
            converted = {"head/kernel": _linear(value)}
        elif match := _BLOCK.match(name):
            scope = f"{ENCODER_SCOPE}/encoderblock_{match.group(1)}"
            converted = _block(match.group(2), value, scope, heads)
        for flax_name, flax_value in (converted or {name: value}).items():
            tensors[flax_name] = flax_value
            origins[flax_name] = name
    _stack_experts(tensors, origins)
    return tensors, origins


def convert(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors by our param path, our path -> name in the file)."""
    try:
        state, metadata = safetensors_file.decode(files.read_bytes(path))
    except safetensors_file.FormatError as error:
        raise UsageError(f"{path} is not a readable safetensors file ({error})") from error
    heads = _num_heads(metadata, path)
    try:
        tensors, origins = to_flax({k: _float32(v) for k, v in state.items()}, heads)
    except ValueError as error:  # a fused qkv or proj weight that does not split into heads
        raise UsageError(f"{path}: attention weights do not split into {heads} heads") from error
    return flax_vit.to_our_paths(tensors, ENCODER_SCOPE, origins)


def _float32(array: np.ndarray) -> np.ndarray:
    """Floats as float32, like every importer (bfloat16 included); integers unchanged."""
    if array.dtype.kind == "f" or array.dtype.name == "bfloat16":
        return array.astype(np.float32)
    return array
