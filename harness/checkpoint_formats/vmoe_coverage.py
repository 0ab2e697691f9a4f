"""Checks that a V-MoE array's chunks cover every one of its elements exactly once.

The reader used to start from zeros and paste in the chunks it found, so a chunk dropped from
a shard (or a leaf whose chunks were all dropped) imported as zeros: exit 0, top-1 0.07. Here
each chunk's slice must lie inside the array with step 1 and hold as many values as it
spans, the chunks must not overlap, and their volumes must add up to the array's size, which
together mean exact coverage, without a per-element map (a 15B model's would take gigabytes).
"""

import math
from collections.abc import Sequence

import numpy as np

Box = tuple[tuple[int, int], ...]  # (start, stop) per axis


def slice_box(global_slice: object, shape: tuple[int, ...]) -> Box:
    """The (start, stop) bounds of a stored slice; ValueError unless it is a tuple of
    step-1 int slices inside `shape`."""
    if not isinstance(global_slice, tuple) or len(global_slice) != len(shape):
        raise ValueError(f"a chunk's slice {global_slice!r} does not match shape {shape}")
    box = []
    for s, size in zip(global_slice, shape, strict=True):
        if not isinstance(s, slice) or s.step not in (None, 1):
            raise ValueError(f"a chunk's slice {global_slice!r} is not a step-1 slice")
        start = 0 if s.start is None else s.start
        stop = size if s.stop is None else s.stop
        if not (_is_int(start) and _is_int(stop) and 0 <= start <= stop <= size):
            raise ValueError(f"a chunk's slice {global_slice!r} lies outside shape {shape}")
        box.append((start, stop))
    return tuple(box)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def volume(box: Box) -> int:
    return math.prod(stop - start for start, stop in box)


def _overlap(a: Box, b: Box) -> bool:
    return all(max(a0, b0) < min(a1, b1) for (a0, a1), (b0, b1) in zip(a, b, strict=True))


def check_chunk(box: Box, flat: np.ndarray | None, dtype: np.dtype) -> None:
    """A chunk must hold as many values as its slice spans, in the array's own dtype (a cast
    would silently change the weights)."""
    held = 0 if flat is None else flat.size
    if held != volume(box):
        raise ValueError(f"a chunk holds {held} values for a slice of {volume(box)}")
    if flat is not None and flat.dtype != dtype:
        raise ValueError(f"a chunk holds {flat.dtype} values in an array of {dtype}")


def coverage_problem(shape: tuple[int, ...], boxes: Sequence[Box]) -> str | None:
    """None when `boxes` cover `shape` exactly once; else what is wrong, in words."""
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            if volume(a) and volume(b) and _overlap(a, b):
                return "two of its chunks overlap"
    covered, size = sum(volume(b) for b in boxes), math.prod(shape)
    if covered != size:
        return f"its chunks cover {covered} of its {size} elements"
    return None
