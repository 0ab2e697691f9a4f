"""One training process per workdir: an advisory lock on WORKDIR/.harness.lock.

Two processes training into one workdir would overwrite each other's checkpoints and events.
flock belongs to the open file, so the kernel releases it when the process exits or crashes:
a stale lock file never blocks the next run.
"""

import contextlib
import fcntl
import os
from collections.abc import Iterator

from harness.errors import UsageError

LOCK_FILE = ".harness.lock"


@contextlib.contextmanager
def locked(workdir: str) -> Iterator[None]:
    """Holds the workdir's lock while inside; refuses at once (UsageError) if another process
    holds it."""
    path = os.path.join(workdir, LOCK_FILE)
    # "a": an existing lock file is not modified; closing it releases the lock.
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise UsageError(
                f"--workdir={workdir} is in use by another harness.run (it holds {path}); wait "
                "for that run to end or pass another --workdir"
            ) from error
        yield
