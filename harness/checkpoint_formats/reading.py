"""Reading checkpoint files from local disk or from any filesystem TensorFlow knows (gs://...),
through harness/storage.py (which imports TensorFlow only when a URL is opened). Only regular
files are read (harness/run_dir/bounded.py): a checkpoint path that is a symlink to /dev/zero
or a FIFO is one line, not a read that never ends."""

from harness import storage
from harness.errors import UsageError
from harness.run_dir import bounded


def read_bytes(path: str, limit: int | None = None) -> bytes:
    """The bytes of the checkpoint file `path`, at most `limit` of them (None: any size)."""
    if not storage.exists(path):
        raise UsageError(f"{path} does not exist; check the checkpoint path")
    return bounded.read_bytes(path, limit)
