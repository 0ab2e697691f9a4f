"""Fits a learned position embedding to another patch grid, as the reference code bases do.

A checkpoint trained at 224px and evaluated at 384px has a 14x14 table where the model needs
24x24. vision_transformer (`checkpoint.interpolate_posembed`) and big_vision
(`vit.resample_posemb`) resize the grid bilinearly with `scipy.ndimage.zoom(order=1)` and keep
the class-token row untouched; this does the same, so imported models match theirs.
"""

import math
import sys
from collections.abc import Callable, Sequence

import numpy as np
import scipy.ndimage

Log = Callable[[str], None]


def log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _square_side(n: int) -> int | None:
    side = math.isqrt(n)
    return side if side * side == n else None


def resample_position_embedding(
    table: np.ndarray,
    target_shape: Sequence[int],
    class_slots: int,
    log: Log = log_to_stderr,
) -> np.ndarray:
    """Returns `table` [1, class_slots + g*g, D] resized to `target_shape` [1, class_slots +
    G*G, D]: the grid bilinearly, the class slots kept. Identity when the shapes already agree.

    A table that is not a square grid, or a different width D, is returned unchanged: the
    strict tree check then reports the shape mismatch in its one line.
    """
    target_shape = tuple(target_shape)
    if table.shape == target_shape or table.ndim != 3 or len(target_shape) != 3:
        return table
    old_side = _square_side(table.shape[1] - class_slots)
    new_side = _square_side(target_shape[1] - class_slots)
    if old_side is None or new_side is None or table.shape[2] != target_shape[2]:
        return table
    width = table.shape[2]
    grid = table[0, class_slots:].reshape(old_side, old_side, width)
    zoom = (new_side / old_side, new_side / old_side, 1)
    grid = scipy.ndimage.zoom(grid, zoom, order=1).reshape(1, new_side * new_side, width)
    log(
        f"position embedding resampled from a {old_side}x{old_side} to a "
        f"{new_side}x{new_side} patch grid (bilinear, class slots kept)"
    )
    return np.concatenate([table[:, :class_slots], grid.astype(table.dtype)], axis=1)
