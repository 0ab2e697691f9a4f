"""Inference timing of trained runs restored from their run directories, all in this one
process on its devices, at batch sizes every run can take."""

import math
from collections.abc import Callable, Mapping
from typing import Any

from harness.errors import UsageError


def time_restored_runs(
    run_dirs: Mapping[str, str],
    batch_sizes: list[int],
    repeats: int,
    warn: Callable[[str], None],
    data_dir: str | None = None,
) -> dict[str, list[Any]]:
    """Inference timings of each named run's latest weights; a run that cannot be restored
    or takes other images is skipped with one `warn` line. `data_dir`: the user's
    --data_dir (harness/run_dir/data_sources.py)."""
    from harness.measure import inference  # restoring checkpoints needs the model stack
    from harness.runtime import restore

    forwards, image_shape, group = {}, None, 1
    for name, path in run_dirs.items():
        try:
            trained = restore.load_trained(path, data_dir)
        except UsageError as error:
            warn(f"not timing {name}: {error}")
            continue
        shape = trained.sharded.image_shape
        if image_shape not in (None, shape):
            warn(f"not timing {name}: its images {shape} differ from {image_shape}")
            continue
        forwards[name] = inference.jit_forward(trained.sharded.model, trained.params)
        image_shape = shape
        group = math.lcm(group, trained.sharded.experiment.model.min_batch)
    if not forwards:
        return {}
    return inference.time_models(
        forwards, image_shape, whole_groups(batch_sizes, group, warn), repeats=repeats
    )


def whole_groups(batch_sizes: list[int], group: int, warn: Callable[[str], None]) -> list[int]:
    """Batch sizes rounded up to whole routing groups (a sparse model routes groups of
    images), so every run is timed at the same sizes; says so when it changes any."""
    rounded = sorted({math.ceil(b / group) * group for b in batch_sizes})
    if rounded != sorted(set(batch_sizes)):
        warn(
            f"timing batch sizes {rounded} instead of {sorted(set(batch_sizes))}: the sparse "
            f"runs route groups of images, so batches must be multiples of {group}"
        )
    return rounded
