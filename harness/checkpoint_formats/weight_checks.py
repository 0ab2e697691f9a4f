"""The one owner of what imported or restored weights must be, whatever their format:

- floats (float16/32/64 or bfloat16): an integer, bool, complex or string array cast to float
  would be silently wrong weights (complex would lose its imaginary part);
- finite: a NaN or infinity imports "fine" and then writes NaN into results.json;
- the shapes the checkpoint itself records: orbax restores an array into whatever shape it is
  asked for, truncating or zero-padding, so a run rebuilt from an edited experiment.json
  would evaluate damaged weights without a word.

Checksums (harness/run_dir/checksums.py) and the V-MoE reader's chunk coverage
(vmoe_reference.py) are checked where the files are read; everything here is numpy on arrays
in memory. Every failure is one UsageError line naming the array.
"""

from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np

from harness.errors import UsageError

FLOAT_DTYPES = (np.float16, np.float32, np.float64, ml_dtypes.bfloat16)
SHAPES_SHOWN = 3


def is_float(dtype: Any) -> bool:
    return any(np.dtype(dtype) == np.dtype(d) for d in FLOAT_DTYPES)


def check_arrays(
    tensors: Mapping[str, np.ndarray], checkpoint: str, names: Mapping[str, str] | None = None
) -> None:
    """Refuses a non-float or non-finite array. `names`: our path -> the checkpoint's name,
    so the message names what the user finds in the checkpoint."""
    names = names or {}
    for path in sorted(tensors):
        array = np.asarray(tensors[path])
        name = names.get(path, path)
        if not is_float(array.dtype):
            raise UsageError(
                f"checkpoint {checkpoint}: weight {name} has dtype {array.dtype}, not a float; "
                "a checkpoint's weights must be float16, bfloat16, float32 or float64"
            )
        if not np.all(np.isfinite(array)):
            raise UsageError(
                f"checkpoint {checkpoint}: weight {name} holds NaN or infinite values; "
                "give a checkpoint saved before the run diverged"
            )


def check_shapes(
    recorded: Mapping[str, tuple[int, ...]],
    wanted: Mapping[str, tuple[int, ...]],
    checkpoint: str,
    model: str,
) -> None:
    """Refuses restoring a checkpoint whose own recorded shapes (by path) differ from the
    model's: orbax would truncate or zero-pad each array to the shape it is asked for."""
    differing = [
        f"{path}: checkpoint {tuple(recorded.get(path, ()))} vs model {tuple(shape)}"
        for path, shape in sorted(wanted.items())
        if path not in recorded or tuple(recorded[path]) != tuple(shape)
    ]
    differing += [f"{path}: not in the model" for path in sorted(recorded.keys() - wanted.keys())]
    if differing:
        more = "; ..." if len(differing) > SHAPES_SHOWN else ""
        shown = "; ".join(differing[:SHAPES_SHOWN]) + more
        raise UsageError(
            f"checkpoint {checkpoint} does not fit {model}: {len(differing)} weight shapes "
            f"differ ({shown}); was the run's experiment.json edited? Restore it, or pass the "
            "checkpoint to harness.evaluate with the gin file it was trained with"
        )
