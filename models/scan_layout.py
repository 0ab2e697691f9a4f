"""The one conversion between a scanned encoder's parameter layout and the per-block one.

With VitSpec.scan_layers an encoder stores each kind of weight once, with a leading depth
axis, instead of once per block. Every import, export, restore and statistic goes through the
per-block layout ('encoder/x_layers_7/...', 'encoder/attention_norms_7/...'), which is what
the unscanned model uses, so a checkpoint of either layout loads into a model of either.
The layout is read from the parameter paths and shapes alone:

  'encoder/repeat/sub/x_layers_j/...'            one scanned period of P blocks (ViT, ViT-22B,
                                                  V-MoE Every-n): repeat r of block j is block
                                                  r * P + j.
  'encoder/segment_k/repeat/sub/x_layers_j/...'  consecutive scans (V-MoE Last-n: the dense
                                                  prefix, then the dense+MoE suffix); segment
                                                  k starts after the blocks of segments < k.
  'encoder/attention_norms/...', 'encoder/moe_norms/...'  WideNet's per-block LayerNorms,
                                                  stacked [num_layers, ...] (its attention and
                                                  MoE are shared, so they have no depth axis).
"""

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import traverse_util

_SCANNED = re.compile(r"^encoder/(?:segment_(\d+)/)?repeat/sub/x_layers_(\d+)/(.*)$")
# WideNet's stacked per-block LayerNorms (models/widenet.py), and their per-block names.
STACKED_NORMS = ("attention_norms", "moe_norms")
_STACKED = re.compile(rf"^encoder/({'|'.join(STACKED_NORMS)})/(.*)$")


@dataclasses.dataclass(frozen=True)
class Segment:
    """One scan over part of the depth: blocks first_block ... first_block + period * repeats."""

    key: str | None  # 'segment_k', or None for the encoder's only scan
    first_block: int
    period: int
    repeats: int

    def block(self, repeat: int, position: int) -> int:
        return self.first_block + repeat * self.period + position


def segments(shapes: Mapping[str, Any]) -> list[Segment]:
    """The scans of a flat {path: array or shape} tree, in depth order; [] if unscanned."""
    periods: dict[int, int] = {}
    repeats: dict[int, int] = {}
    lone = False
    for path, value in shapes.items():
        match = _SCANNED.match(path)
        if not match:
            continue
        lone = lone or match.group(1) is None
        index = int(match.group(1) or 0)
        periods[index] = max(periods.get(index, 0), int(match.group(2)) + 1)
        repeats[index] = int(np.shape(value)[0])
    result, first = [], 0
    for index in sorted(periods):
        key = None if lone else f"segment_{index}"
        result.append(Segment(key, first, periods[index], repeats[index]))
        first += periods[index] * repeats[index]
    return result


def tree_segments(params: Mapping[str, Any]) -> list[Segment]:
    """`segments` of a nested param tree (what model.init returns)."""
    return segments(traverse_util.flatten_dict(dict(params), sep="/"))


def _at(value: Any, index: int) -> Any:
    """Row `index` of an array, or the shape of one row of an abstract one."""
    if isinstance(value, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(value.shape[1:], value.dtype)
    return value[index]


def _by_key(found: list[Segment]) -> dict[str | None, Segment]:
    return {segment.key: segment for segment in found}


def is_scanned(shapes: Mapping[str, Any]) -> bool:
    return any(_SCANNED.match(p) or _STACKED.match(p) for p in shapes)


def to_blocks(params: Mapping[str, Any]) -> dict[str, Any]:
    """A flat scanned tree laid out per block ('encoder/x_layers_7/...'); other paths as they
    are. A tree that is already per block comes back unchanged."""
    by_key = _by_key(segments(params))
    blocks: dict[str, Any] = {}
    for path, value in params.items():
        scanned, stacked = _SCANNED.match(path), _STACKED.match(path)
        if scanned:
            segment = by_key[f"segment_{scanned.group(1)}" if scanned.group(1) else None]
            position, rest = int(scanned.group(2)), scanned.group(3)
            for repeat in range(value.shape[0]):
                block = segment.block(repeat, position)
                blocks[f"encoder/x_layers_{block}/{rest}"] = _at(value, repeat)
        elif stacked:
            for block in range(value.shape[0]):
                blocks[f"encoder/{stacked.group(1)}_{block}/{stacked.group(2)}"] = _at(value, block)
        else:
            blocks[path] = value
    return blocks


def _block_paths(path: str, wanted: Mapping[str, Any], by_key: dict) -> list[str] | None:
    """The per-block paths that stack into the scanned `path`; None if it is not scanned."""
    scanned, stacked = _SCANNED.match(path), _STACKED.match(path)
    if scanned:
        segment = by_key[f"segment_{scanned.group(1)}" if scanned.group(1) else None]
        position, rest = int(scanned.group(2)), scanned.group(3)
        return [
            f"encoder/x_layers_{segment.block(r, position)}/{rest}" for r in range(segment.repeats)
        ]
    if stacked:
        depth = int(np.shape(wanted[path])[0])
        return [f"encoder/{stacked.group(1)}_{i}/{stacked.group(2)}" for i in range(depth)]
    return None


def to_layout(
    blocks: Mapping[str, np.ndarray],
    wanted: Mapping[str, Any],
    sources: Mapping[str, str] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Per-block tensors stacked into the layout of `wanted` (a flat tree of arrays or
    shape-bearing leaves), and the checkpoint name of each stacked tensor for messages.

    A scanned path whose blocks are not all there, or differ in shape, is left unstacked, so
    the strict fill (harness/checkpoint_formats/tree_mapping.py) names the missing or
    misshapen weights.
    """
    tensors, names = dict(blocks), dict(sources or {})
    if not is_scanned(wanted):
        return tensors, names
    by_key = _by_key(segments(wanted))
    for path in wanted:
        parts = _block_paths(path, wanted, by_key)
        if not parts or not all(p in tensors for p in parts):
            continue
        if len({np.shape(tensors[p]) for p in parts}) != 1:
            continue
        tensors[path] = np.stack([np.asarray(tensors.pop(p)) for p in parts])
        first, last = (names.pop(p, p) for p in (parts[0], parts[-1]))
        for p in parts[1:-1]:
            names.pop(p, None)
        names[path] = f"{first} ... {last}"
    return tensors, names


def per_block_ndim(path: str, value: Any) -> int:
    """Dimensions of the weight at `path` in one block: the depth axis does not count."""
    ndim = len(value.shape)
    return ndim - 1 if (_SCANNED.match(path) or _STACKED.match(path)) else ndim


def unscan_stats(stats: Any, found: list[Segment]) -> Any:
    """A scanned stack's sown stats laid out as the unrolled stack's.

    praxis's scan sows block j of the repeated pattern once, under '.../repeat/sub/x_layers_j',
    with a leading axis over the repeats; repeat r of it is `segment.block(r, j)`. The
    segments come from the params (`segments`): a dense scan that sows nothing still shifts
    the blocks after it. Everything downstream (per_block, the report) then sees one entry
    per block either way.
    """
    if not isinstance(stats, dict) or not found:
        return stats
    by_key = _by_key(found)
    result: dict[str, Any] = {}
    for key, value in stats.items():
        segment = by_key.get(key) if key != "repeat" else by_key.get(None)
        if key.startswith("segment_") and segment is not None and isinstance(value, dict):
            value, key = value.get("repeat", {}), "repeat"
        if key == "repeat" and segment is not None and isinstance(value, dict) and "sub" in value:
            for layer, subtree in value["sub"].items():
                position = int(layer.removeprefix("x_layers_"))
                for r in range(segment.repeats):
                    picked = _index(subtree, r)
                    result[f"x_layers_{segment.block(r, position)}"] = picked
        else:
            result[key] = unscan_stats(value, found)
    return result


def _index(tree: Any, r: int) -> Any:
    if isinstance(tree, dict):
        return {k: _index(v, r) for k, v in tree.items()}
    if isinstance(tree, tuple):
        return tuple(_index(v, r) for v in tree)
    return tree[r]
