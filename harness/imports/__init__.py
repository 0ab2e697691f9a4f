"""Importers of trained weights into our param trees: our own runs, vision_transformer and
big_vision .npz files, and V-MoE reference checkpoints. `import_params` is the entry point."""

from harness.imports.detect import FORMATS
from harness.imports.importer import import_params

__all__ = ["FORMATS", "import_params"]
