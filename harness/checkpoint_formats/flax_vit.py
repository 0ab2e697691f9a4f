"""Names and layouts of the flax ViT family (vision_transformer, big_vision, V-MoE) -> ours.

The three codebases share one module layout (embedding conv, encoder blocks of LayerNorm,
MultiHeadDotProductAttention and an MLP, encoder_norm, pre_logits, head) and differ in the
encoder's scope name, where the position embedding lives and how blocks are numbered. Each
format module resolves those differences and hands the result here.

Layout differences from our praxis layers, each a fixed transform:
  * LayerNorm: flax multiplies by `scale`, praxis by `1 + scale` (its default direct_scale=False).
  * Attention output: flax kernel is [heads, head_dim, D], praxis `post.w` is [D, heads, head_dim].
  * Patch embedding: the flax conv kernel [p, p, C, D] flattened to [p*p*C, D] is praxis's
    linear on patches, which praxis flattens in the same (row, column, channel) order.
"""

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping

import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]

_MODULE_NUMBER = re.compile(r"^(.*)_(\d+)$")
# Named with their index on purpose, not auto-numbered: renumbering would hide a missing block.
_EXPLICITLY_NUMBERED = {"encoderblock"}


def _auto_numbered(part: str) -> re.Match[str] | None:
    match = _MODULE_NUMBER.match(part)
    return match if match and match.group(1) not in _EXPLICITLY_NUMBERED else None


def renumber_like_linen(names: Iterable[str]) -> dict[str, str]:
    """Maps each '/'-joined name to its Linen spelling: submodules numbered per type.

    Pre-Linen flax numbered all submodules of a module together (LayerNorm_0,
    MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3: the original ViT checkpoints);
    Linen numbers each type separately (LayerNorm_0, LayerNorm_1, ...). Renumbering by order
    within each type makes both read the same; Linen names are left as they are.
    """
    names = list(names)
    numbers: dict[tuple[str, str], set[int]] = defaultdict(set)
    for name in names:
        parts = name.split("/")
        for depth, part in enumerate(parts[:-1]):  # leaves are parameters, not modules
            if match := _auto_numbered(part):
                numbers[("/".join(parts[:depth]), match.group(1))].add(int(match.group(2)))
    rank = {key: {n: i for i, n in enumerate(sorted(ns))} for key, ns in numbers.items()}

    def rename(name: str) -> str:
        parts = name.split("/")
        renamed = list(parts)
        for depth, part in enumerate(parts[:-1]):
            if match := _auto_numbered(part):
                kind, number = match.group(1), int(match.group(2))
                renamed[depth] = f"{kind}_{rank[('/'.join(parts[:depth]), kind)][number]}"
        return "/".join(renamed)

    return {name: rename(name) for name in names}


def _keep(x: np.ndarray) -> np.ndarray:
    return x


def _layer_norm_scale(x: np.ndarray) -> np.ndarray:
    return x - 1.0


def _attention_out(x: np.ndarray) -> np.ndarray:
    return np.transpose(x, (2, 0, 1))


def _patch_kernel(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, x.shape[-1]) if x.ndim == 4 else x


_LAYER_NORM = [
    ("scale", "scale", _layer_norm_scale),
    ("bias", "bias", _keep),
]
_DENSE = [("kernel", "linear/w", _keep), ("bias", "bias/b", _keep)]


def _rules(encoder: str) -> list[tuple[str, str, Transform]]:
    """(checkpoint name regex, our path template, transform); {i} is the block index."""
    block = rf"{encoder}/encoderblock_(?P<i>\d+)"
    ours = "encoder/x_layers_{i}"
    rules: list[tuple[str, str, Transform]] = [
        ("embedding/kernel", "patch_embedding/patch_projection/linear/w", _patch_kernel),
        ("embedding/bias", "patch_embedding/patch_projection/bias/b", _keep),
        ("cls", "patch_embedding/prepend_cls_embs", _keep),
        ("pos_embedding", "position_embedding", _keep),
    ]
    for theirs, our_module in (
        (f"{block}/LayerNorm_0", f"{ours}/layer_norm"),
        (f"{block}/LayerNorm_1", f"{ours}/ff_layer/layer_norm"),
        (f"{encoder}/encoder_norm", "final_norm"),
    ):
        rules += [(f"{theirs}/{a}", f"{our_module}/{b}", t) for a, b, t in _LAYER_NORM]
    attention = rf"{block}/(?:MultiHeadDotProductAttention_0|SelfAttention)"
    for projection in ("query", "key", "value"):
        rules += [
            (f"{attention}/{projection}/kernel", f"{ours}/self_attention/{projection}/w", _keep),
            (f"{attention}/{projection}/bias", f"{ours}/self_attention/{projection}/b", _keep),
        ]
    rules += [
        (f"{attention}/out/kernel", f"{ours}/self_attention/post/w", _attention_out),
        (f"{attention}/out/bias", f"{ours}/self_attention/post/b", _keep),
    ]
    mlp = rf"{block}/(?:MlpBlock_0|Mlp)"
    for dense, ffn in (("Dense_0", "ffn_layer1"), ("Dense_1", "ffn_layer2")):
        rules += [(f"{mlp}/{dense}/{a}", f"{ours}/ff_layer/{ffn}/{b}", t) for a, b, t in _DENSE]
    # V-MoE's MoE block: a bias-free router and E stacked expert MLPs, leading axis E.
    moe = f"{block}/Moe"
    rules += [
        (f"{moe}/Router/dense/kernel", f"{ours}/ff_layer/moe/router", _keep),
        (f"{moe}/Mlp/Dense_0/kernel", f"{ours}/ff_layer/moe/wi", _keep),
        (f"{moe}/Mlp/Dense_0/bias", f"{ours}/ff_layer/moe/bi", _keep),
        (f"{moe}/Mlp/Dense_1/kernel", f"{ours}/ff_layer/moe/wo", _keep),
        (f"{moe}/Mlp/Dense_1/bias", f"{ours}/ff_layer/moe/bo", _keep),
    ]
    for head, our_head in (("pre_logits", "pre_logits_layer"), ("head", "head")):
        rules += [(f"{head}/{a}", f"{our_head}/{b}", t) for a, b, t in _DENSE]
    return rules


def to_our_paths(
    tensors: Mapping[str, np.ndarray],
    encoder: str,
    origins: Mapping[str, str] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Renames and re-lays-out flax ViT tensors into our '/'-joined param paths.

    Args:
      tensors: Checkpoint tensors by their flax names, relative to the model root, with the
        position embedding already at 'pos_embedding' in our layout (class slot first, if any).
      encoder: The encoder's scope: 'Transformer' (vision_transformer, big_vision) or
        'Encoder' (V-MoE).
      origins: Name in `tensors` -> name in the checkpoint file, where the format module
        moved a tensor (the position embedding, unstacked blocks), for messages.

    Returns:
      (tensors by our path, our path -> checkpoint name). A name no rule knows is kept as it
      is, so the strict check reports it as having no place in the model.
    """
    compiled = [(re.compile(p + "$"), template, t) for p, template, t in _rules(encoder)]
    linen_names = renumber_like_linen(tensors)
    converted: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    for name, value in tensors.items():
        target, transform = name, _keep
        for pattern, template, rule_transform in compiled:
            if match := pattern.match(linen_names[name]):
                target, transform = template.format(**match.groupdict()), rule_transform
                break
        converted[target] = transform(value)
        sources[target] = (origins or {}).get(name, name)
    return converted, sources
