"""Every checkpoint format by name: what its path looks like, and where its reader is.

Pure Python (no JAX, numpy or TensorFlow), so TrainSpec checks `init_from_format` while gin
parses and `--help` stays fast; a reader module is imported only when a checkpoint is read.
A reader module has `convert(path) -> (tensors by our path, their checkpoint names)`, or
`convert(path, step)` for a format with steps (our run directories). Formats that share a
file type (the .npz ones) are told apart by the tensor names inside: the file is read once
and the first such format whose module's `looks_like(names)` holds converts it with
`convert_arrays(arrays)`; when none does, the last one registered (the most permissive).

Adding a format is its reader module and one `register` call here.
"""

import dataclasses
import importlib
from collections.abc import Callable
from types import ModuleType

from harness import storage
from harness.run_dir import names

NPZ = "npz"  # the path shape the .npz formats share


@dataclasses.dataclass(frozen=True)
class CheckpointFormat:
    """module: the reader. help: what a path of this format is, for messages.
    matches: whether a path has this format's shape (cheap: the name, or a file beside it).
    file_type: formats sharing one (NPZ) are told apart by their tensor names.
    has_steps: the reader takes a step (None: the latest)."""

    module: str
    help: str
    matches: Callable[[str], bool]
    file_type: str | None = None
    has_steps: bool = False

    def reader(self) -> ModuleType:
        return importlib.import_module(self.module)


FORMATS: dict[str, CheckpointFormat] = {}


def register(name: str, checkpoint_format: CheckpointFormat) -> None:
    """Makes `name` a format harness.evaluate --format and TrainSpec.init_from_format accept;
    formats sharing a file type are tried in registration order."""
    FORMATS[name] = checkpoint_format


def _is_npz(path: str) -> bool:
    return path.endswith(".npz")


register(
    "run",
    CheckpointFormat(
        "harness.checkpoint_formats.orbax_run",
        "a run directory with checkpoints/ (ours)",
        lambda path: storage.isdir(storage.join(path, names.CHECKPOINT_DIR)),
        has_steps=True,
    ),
)
# big_vision before vision_transformer: its layout has marks of its own (train-state prefix,
# scanned blocks, posemb outside the encoder); any other .npz is read as vision_transformer's.
register(
    "big_vision_npz",
    CheckpointFormat(
        "harness.checkpoint_formats.big_vision_npz", "a big_vision .npz", _is_npz, file_type=NPZ
    ),
)
register(
    "vit_npz",
    CheckpointFormat(
        "harness.checkpoint_formats.vit_npz", "a vision_transformer .npz", _is_npz, file_type=NPZ
    ),
)
register(
    "vmoe",
    CheckpointFormat(
        "harness.checkpoint_formats.vmoe_reference",
        "a V-MoE PREFIX (with PREFIX.index)",
        lambda path: path.endswith(".index") or storage.exists(path + ".index"),
    ),
)
register(
    "safetensors",
    CheckpointFormat(
        "harness.checkpoint_formats.timm_safetensors",
        "a timm state dict as python -m harness.export writes it",
        lambda path: path.endswith(".safetensors"),
    ),
)
