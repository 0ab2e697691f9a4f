"""The one call the evaluation CLI makes: checkpoint path + our abstract params -> host params."""

from collections.abc import Mapping
from typing import Any

import numpy as np

from harness.checkpoint_formats import (
    detect,
    npz_reading,
    posemb,
    tree_mapping,
    weight_checks,
)
from harness.checkpoint_formats.registry import FORMATS, NPZ
from models import scan_layout

CLASS_TOKEN = "patch_embedding/prepend_cls_embs"
POSITION_EMBEDDING = "position_embedding"

Converted = tuple[dict[str, np.ndarray], dict[str, str]]


def read_checkpoint(path: str, format_name: str | None, step: int | None) -> tuple[str, Converted]:
    """(the format used, its tensors by our path and their checkpoint names)."""
    chosen = detect.check_format_name(format_name) if format_name else detect.path_format(path)
    if chosen != NPZ and FORMATS[chosen].file_type != NPZ:
        reader = FORMATS[chosen].reader()
        return chosen, reader.convert(path, step) if FORMATS[chosen].has_steps else reader.convert(
            path
        )
    arrays = npz_reading.read_npz(path)  # once, for detection and conversion both
    if chosen == NPZ:
        chosen = detect.npz_format(set(arrays))
    return chosen, FORMATS[chosen].reader().convert_arrays(arrays)


def fit_position_embedding(
    tensors: dict[str, np.ndarray], wanted: Mapping[str, Any], log: posemb.Log
) -> None:
    if POSITION_EMBEDDING in tensors and POSITION_EMBEDDING in wanted:
        tensors[POSITION_EMBEDDING] = posemb.resample_position_embedding(
            tensors[POSITION_EMBEDDING],
            wanted[POSITION_EMBEDDING].shape,
            class_slots=1 if CLASS_TOKEN in wanted else 0,
            log=log,
        )


def import_params(
    path: str,
    abstract_params: Mapping[str, Any],
    *,
    model: str,
    format_name: str | None = None,
    step: int | None = None,
    log: posemb.Log = posemb.log_to_stderr,
) -> tuple[dict[str, Any], str]:
    """Reads the checkpoint at `path` into our param tree, strictly.

    Args:
      path: Local or gs:// path: a run directory (ours), a .npz (vision_transformer or
        big_vision), a V-MoE checkpoint prefix or its .index file, or a .safetensors file
        of harness.export.
      abstract_params: Our model's params, e.g. the 'params' of jax.eval_shape(model.init,
        ...); only shapes and dtypes are used.
      model: What the model was built from (the gin file), named in errors.
      format_name: One of detect.FORMATS to skip detection; None detects.
      step: For run directories, the step to read; None: the latest.
      log: Receives the one line saying the position embedding was resampled, if it was.

    Returns:
      (params: nested dict of host numpy arrays shaped and typed like `abstract_params`, for
      the caller to place on its mesh; the format that was read).

    Raises:
      harness.errors.UsageError: One line for an unreadable path, an unknown format, a
        checkpoint that does not fit the model (extra, missing or misshapen tensors), or
        weights that are not finite floats (harness/checkpoint_formats/weight_checks.py).
    """
    chosen, (tensors, sources) = read_checkpoint(path, format_name, step)
    weight_checks.check_arrays(tensors, path, sources)  # before anything casts them
    wanted = tree_mapping.flat_paths(abstract_params)
    fit_position_embedding(tensors, wanted, log)
    # Every reader gives per-block tensors; a scanned model stacks them (scan_layout).
    tensors, sources = scan_layout.to_layout(tensors, wanted, sources)
    params = tree_mapping.fill_tree(
        abstract_params, tensors, checkpoint=path, model=model, source_names=sources
    )
    return params, chosen
