"""The one strict check every importer ends with: converted tensors must fill our tree exactly.

A checkpoint that half-fits is worse than one that does not load: a missing weight silently
keeps its random init and the accuracy is quietly wrong. So nothing is skipped, nothing is
left over and every shape must match, and the failure is one line naming what differs.
"""

from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import traverse_util

from harness.errors import UsageError

SEPARATOR = "/"
NAMES_SHOWN = 3  # enough to recognise the pattern, short enough for one line


def flat_paths(tree: Mapping[str, Any]) -> dict[str, Any]:
    """{'encoder/x_layers_0/layer_norm/scale': leaf, ...}: our tree keyed by '/'-joined paths."""
    return traverse_util.flatten_dict(tree, sep=SEPARATOR)


def _first_names(names: list[str]) -> str:
    shown = ", ".join(names[:NAMES_SHOWN])
    return shown + (", ..." if len(names) > NAMES_SHOWN else "")


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def fill_tree(
    abstract_params: Mapping[str, Any],
    tensors: Mapping[str, np.ndarray],
    *,
    checkpoint: str,
    model: str,
    source_names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Returns `abstract_params` with every leaf replaced by its tensor from `tensors`.

    Args:
      abstract_params: Our param tree (ShapeDtypeStructs or arrays; only shape and dtype used).
      tensors: Converted host arrays keyed by our '/'-joined paths. Checkpoint tensors the
        importer could not name in our terms are kept under their checkpoint names, so they
        are reported as having no place.
      checkpoint: The checkpoint's path, for the message.
      model: What describes the model (the gin file), for the message.
      source_names: Our path -> checkpoint name, so messages name what the user can find in
        the checkpoint rather than our internal path.

    Returns:
      A nested dict of numpy arrays in the tree's dtypes.

    Raises:
      UsageError: One line counting and naming the extra, missing and misshapen tensors.
    """
    source_names = source_names or {}
    wanted = flat_paths(abstract_params)
    extra = sorted(source_names.get(k, k) for k in tensors.keys() - wanted.keys())
    missing = sorted(wanted.keys() - tensors.keys())
    misshapen = [
        f"{source_names.get(k, k)}: checkpoint {tuple(np.shape(tensors[k]))} vs model "
        f"{tuple(wanted[k].shape)}"
        for k in sorted(wanted.keys() & tensors.keys())
        if tuple(np.shape(tensors[k])) != tuple(wanted[k].shape)
    ]
    problems = []
    if extra:
        counted = _count(len(extra), "checkpoint tensor has", "checkpoint tensors have")
        problems.append(f"{counted} no place in the model ({_first_names(extra)})")
    if missing:
        counted = _count(len(missing), "model weight is", "model weights are")
        problems.append(f"{counted} not in the checkpoint ({_first_names(missing)})")
    if misshapen:
        counted = _count(len(misshapen), "shape differs", "shapes differ")
        problems.append(f"{counted} ({_first_names(misshapen)})")
    if problems:
        raise UsageError(
            f"checkpoint {checkpoint} does not fit {model}: {'; '.join(problems)}; "
            "check that the gin file matches the checkpoint"
        )
    filled = {k: np.asarray(tensors[k]).astype(wanted[k].dtype) for k in wanted}
    return traverse_util.unflatten_dict(filled, sep=SEPARATOR)
