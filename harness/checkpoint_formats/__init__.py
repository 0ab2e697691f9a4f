"""Importers of trained weights into our param trees: our own runs, vision_transformer and
big_vision .npz files, V-MoE reference checkpoints and the timm safetensors files that
harness.export writes. `import_params` is the entry point."""

from harness.checkpoint_formats.detect import FORMATS
from harness.checkpoint_formats.importer import import_params

__all__ = ["FORMATS", "import_params"]
