"""One training process per workdir: an advisory lock on WORKDIR/.harness.lock.

Two processes training into one workdir would overwrite each other's checkpoints and events.
flock belongs to the open file, so the kernel releases it when the process exits or crashes:
a stale lock file never blocks the next run.

A workdir on a URL (gs://...) is not locked, with one warning line. An object store has
neither flock nor, through tf.io.gfile, a create-if-absent write (GCS's ifGenerationMatch=0
precondition is not exposed), so a lock object would be a check-then-write race that misses
exactly the concurrent start it is for, and a run that crashed would leave it behind to block
every later one. Saying that concurrent runs into one bucket path go undetected is honest.
"""

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator

from harness import storage
from harness.errors import UsageError
from harness.run_dir import names

LOCK_FILE = names.LOCK_FILE


@contextlib.contextmanager
def locked(workdir: str) -> Iterator[None]:
    """Holds the workdir's lock while inside; refuses at once (UsageError) if another process
    holds it. A URL workdir is not locked (see the module docstring); a file:// URL is the
    local path it names and is locked as that path."""
    workdir = storage.local_form(workdir)
    if storage.is_url(workdir):
        print(
            f"warning: --workdir={workdir} is a URL, which cannot be locked (object stores "
            "have no lock): a second harness.run into it at the same time is not detected",
            file=sys.stderr,
        )
        yield
        return
    path = os.path.join(workdir, LOCK_FILE)
    # "a": an existing lock file is not modified; closing it releases the lock.
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise UsageError(_in_use(workdir, path)) from error
        yield


def remove_if_only_lock(workdir: str) -> None:
    """Removes a local workdir that holds nothing but its lock file: what a run that created
    it and then stopped on bad input leaves behind."""
    try:
        if set(os.listdir(workdir)) <= {LOCK_FILE}:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(workdir, LOCK_FILE))
            os.rmdir(workdir)
    except OSError:
        pass  # something else appeared in it, or it is gone: leave it as it is


def check_free(workdir: str) -> None:
    """Refuses (UsageError) a workdir whose lock another process holds, without creating
    anything: a command can stop before its heavy work, and takes the lock itself (`locked`)
    before it writes. No lock file means no process has held it."""
    workdir = storage.local_form(workdir)
    path = os.path.join(workdir, LOCK_FILE)
    if storage.is_url(workdir) or not os.path.isfile(path):
        return
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise UsageError(_in_use(workdir, path)) from error


def _in_use(workdir: str, path: str) -> str:
    return (
        f"--workdir={workdir} is in use by another harness.run or harness.evaluate (it holds "
        f"{path}); wait for it to end or pass another --workdir"
    )
