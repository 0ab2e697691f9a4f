"""Chooses the importer by what a path holds, so the user names a checkpoint, not its format.
The formats and their path shapes are harness/checkpoint_formats/registry.py's."""

from harness import storage
from harness.checkpoint_formats.registry import FORMATS as REGISTERED
from harness.checkpoint_formats.registry import NPZ
from harness.errors import UsageError

RUN = "run"
VIT_NPZ = "vit_npz"
BIG_VISION_NPZ = "big_vision_npz"
VMOE = "vmoe"
SAFETENSORS = "safetensors"
FORMATS = tuple(REGISTERED)  # the built-in ones; the checks below read the live registry


def format_help() -> str:
    return "; ".join(f"{name}: {entry.help}" for name, entry in REGISTERED.items())


def npz_format(names: set[str]) -> str:
    """The .npz format whose layout the tensor names show, else the last one registered."""
    candidates = [name for name, entry in REGISTERED.items() if entry.file_type == NPZ]
    for name in candidates:
        if REGISTERED[name].reader().looks_like(names):
            return name
    return candidates[-1]


def path_format(path: str) -> str:
    """The format of `path` by its shape alone, with 'npz' standing for either npz format
    (telling them apart needs the names inside; see `npz_format`)."""
    for name, entry in REGISTERED.items():
        if entry.matches(path):
            return entry.file_type or name
    if not storage.exists(path):
        raise UsageError(f"checkpoint {path} does not exist; check the path")
    raise UsageError(f"cannot tell the checkpoint format of {path}; give one of: {format_help()}")


def check_format_name(name: str) -> str:
    if name not in REGISTERED:
        raise UsageError(f"checkpoint format {name!r} is unknown; use one of {tuple(REGISTERED)}")
    return name
