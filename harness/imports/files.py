"""Reading checkpoint files from local disk or from any filesystem TensorFlow knows (gs://...),
through harness/storage.py (which imports TensorFlow only when a URL is opened)."""

from harness import storage
from harness.errors import UsageError


def read_bytes(path: str) -> bytes:
    if not storage.exists(path):
        raise UsageError(f"{path} does not exist; check the checkpoint path")
    return storage.read_bytes(path)
