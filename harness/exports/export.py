"""`export_run`: a run directory's weights -> files another code base reads.

Order of work, so that bad input costs nothing and leaves nothing: the format, the model
(from experiment.json) and the output paths are checked first; then the checkpoint is read
and every file is encoded in memory; then all files are written through temporary names and
renamed into place together, a V-MoE checkpoint's index last, so a reader never finds an
index whose data shards are not all there.
"""

import contextlib
import io
import os
import re
from collections.abc import Callable

import numpy as np

from harness import files, storage
from harness.errors import UsageError
from harness.exports import (
    flax_layout,
    model_support,
    run_weights,
    safetensors_export,
    vmoe_checkpoint,
)
from harness.exports.model_support import SAFETENSORS, VIT_NPZ, VMOE
from harness.exports.run_weights import RunWeights

SUFFIXES = {VIT_NPZ: ".npz", SAFETENSORS: ".safetensors"}
VMOE_INDEX_SUFFIX = ".index"
_SHARD_NAME = re.compile(r"\.data-\d{5}-of-\d{5}$")

Log = Callable[[str], None]


def vmoe_prefix(output: str) -> str:
    """V-MoE checkpoints are named by prefix; PREFIX.index is accepted for it too."""
    return output.removesuffix(VMOE_INDEX_SUFFIX)


def check_output_name(format_name: str, output: str) -> None:
    suffix = SUFFIXES.get(format_name)
    if suffix and not output.endswith(suffix):
        raise UsageError(
            f"--output={output} must end with {suffix} for --format={format_name} (the "
            "importers and timm tell the format by it)"
        )
    if output.endswith("/") or storage.isdir(output):
        raise UsageError(f"--output={output} is a folder; give a file name inside it")


def existing_outputs(format_name: str, output: str) -> list[str]:
    """The files an export to `output` would replace: the file, or a V-MoE checkpoint's index
    and all its data shards (of any shard count)."""
    if format_name != VMOE:
        return [output] if storage.exists(output) else []
    prefix = vmoe_prefix(output)
    found = [prefix + VMOE_INDEX_SUFFIX] if storage.exists(prefix + VMOE_INDEX_SUFFIX) else []
    return found + [p for p in storage.glob(prefix + ".data-*") if _SHARD_NAME.search(p)]


def check_overwrite(existing: list[str], overwrite: bool) -> None:
    for path in existing:
        if not storage.is_regular_file(path):
            raise UsageError(f"{path} exists and is not a regular file; refusing to replace it")
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise UsageError(f"{existing[0]}{more} exists; pass --overwrite to replace it")


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # a file object: np.savez would append .npz to a path
    return buffer.getvalue()


def encode(format_name: str, weights: RunWeights, output: str) -> dict[str, bytes]:
    """{path: content} of every file the export writes, the V-MoE index last."""
    vit = weights.spec.vit
    if format_name == SAFETENSORS:
        return {output: safetensors_export.encode(weights)}
    spelling = flax_layout.VISION_TRANSFORMER if format_name == VIT_NPZ else flax_layout.VMOE
    flax = flax_layout.to_flax(
        weights.params, spelling, patch_size=vit.patch_size, channels=vit.num_channels
    )
    if format_name == VIT_NPZ:
        return {output: _npz_bytes(flax)}
    prefix = vmoe_prefix(output)
    index, shards = vmoe_checkpoint.encode(flax)
    contents = {
        vmoe_checkpoint.shard_path(prefix, i, len(shards)): shard for i, shard in enumerate(shards)
    }
    return contents | {prefix + VMOE_INDEX_SUFFIX: index}


def write_together(contents: dict[str, bytes]) -> None:
    """Writes every file to a temporary name, then, once all are written, renames each into
    place, `contents`' last file last. A failure leaves no file changed and none behind."""
    with contextlib.ExitStack() as stack:
        # ExitStack leaves contexts in reverse order of entry, so entering the last file
        # first renames it last.
        for path in reversed(list(contents)):
            temporary = stack.enter_context(files.replacing(path))
            with open(temporary, "wb") as f:
                f.write(contents[path])


def export_run(
    run_dir: str,
    format_name: str,
    output: str,
    *,
    step: int | None = None,
    overwrite: bool = False,
    log: Log = print,
) -> list[str]:
    """Writes run `run_dir`'s checkpoint (`step`, None: the latest) as `format_name` at
    `output` and returns the paths written.

    Raises:
      UsageError: one line, before anything is written, for an unknown format, a model the
        format cannot hold, an output that exists (without `overwrite`) or is not a regular
        file, and an unreadable or damaged run directory.
    """
    model_support.check_format(format_name)
    check_output_name(format_name, output)
    spec = run_weights.read_spec(run_dir)
    model_support.check_model(spec, format_name, run_dir)
    existing = existing_outputs(format_name, output)
    check_overwrite(existing, overwrite)
    weights = run_weights.read_weights(run_dir, step)
    contents = encode(format_name, weights, output)
    parent = os.path.dirname(output)
    if parent:
        storage.makedirs(parent)
    write_together(contents)
    for stale in sorted(set(existing) - set(contents)):  # shards of the checkpoint replaced
        storage.remove(stale)
    if format_name == VIT_NPZ and spec.vit.pre_logits:
        log("note: the model has a pre-logits layer, which timm's _load_weights skips")
    return list(contents)
