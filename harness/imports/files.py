"""Reading checkpoint files from local disk or from any filesystem TensorFlow knows (gs://...),
through harness/storage.py (which imports TensorFlow only when a URL is opened)."""

from harness import storage
from harness.errors import UsageError

is_remote = storage.is_url
exists = storage.exists
is_dir = storage.isdir
list_dir = storage.listdir
glob = storage.glob
join = storage.join


def read_bytes(path: str) -> bytes:
    if not exists(path):
        raise UsageError(f"{path} does not exist; check the checkpoint path")
    return storage.read_bytes(path)
