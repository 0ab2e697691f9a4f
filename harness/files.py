"""Writing files so that a reader (or a crash) never sees half of one, locally or on a URL
(gs://...; harness/storage.py)."""

import contextlib
import errno
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from typing import Any

from harness import storage
from harness.errors import UsageError, WriteFailed

# Results are shared data: everything the harness writes is readable by everyone, whatever the
# umask made of the temporary file (mkstemp creates it 0600).
FILE_MODE = 0o644


def check_replaceable(path: str) -> None:
    """Refuses (UsageError) a local `path` that exists and is not a regular file.

    Renaming a temporary file over a path replaces whatever the name pointed at: run as root,
    `-o /dev/null` turned the device into a regular file, and a symlink would become a copy
    while its target kept the old text. So only regular files and new paths are written; a
    directory, device, FIFO, socket or symlink is the user's and stays as it is."""
    if storage.is_url(path) or not os.path.lexists(path):
        return
    mode = os.lstat(path).st_mode
    if not stat.S_ISREG(mode):
        raise UsageError(
            f"{path} is not a regular file (it is {_kind(mode)}), so it is not replaced; "
            "write to a regular file or a new path"
        )


# What the file system says when it cannot take a file: a full disk, a quota, a file too
# large, a read-only mount, a failing device. A write that fails so is one line (WriteFailed).
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO)


def _write_failed(path: str, error: OSError) -> WriteFailed:
    reason = error.strerror or str(error)
    kept = "the previous file is kept" if os.path.lexists(path) else "nothing was written"
    return WriteFailed(f"{path} could not be written ({reason}); {kept}: free space and rerun")


def _kind(mode: int) -> str:
    kinds = (
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a file")


@contextlib.contextmanager
def replacing(path: str) -> Iterator[str]:
    """Yields a temporary local path to write; puts it at `path` when the block succeeds.
    Readers see the old file or the new one, never half of one; a failure leaves the old file
    as it was and no temporary file behind.

    Locally the temporary file sits beside `path` and is renamed over it. For a URL it sits in
    the system's temporary folder and is uploaded in one write, which an object store makes
    visible whole (see harness/storage.py). A local `path` that exists must be a regular
    file (`check_replaceable`)."""
    check_replaceable(path)
    if storage.is_url(path):
        with tempfile.TemporaryDirectory(prefix="harness-upload-") as folder:
            temporary = os.path.join(folder, os.path.basename(path))
            yield temporary
            storage.upload(temporary, path)
        return
    directory = os.path.dirname(os.path.abspath(path))
    try:
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    except OSError as error:
        if error.errno in STORAGE_ERRNOS:
            raise _write_failed(path, error) from error
        raise
    os.close(handle)
    try:
        yield temporary
        os.chmod(temporary, FILE_MODE)
        check_replaceable(path)  # it may have become something else while we wrote
        os.replace(temporary, path)
    except OSError as error:
        if error.errno in STORAGE_ERRNOS:
            raise _write_failed(path, error) from error
        raise
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_text_atomically(path: str, text: str) -> None:
    with replacing(path) as temporary, open(temporary, "w") as f:
        f.write(text)


def write_json_atomically(path: str, payload: dict[str, Any]) -> None:
    """`payload` as indented JSON with sorted keys (numpy scalars become floats)."""
    write_text_atomically(path, json.dumps(payload, indent=2, sort_keys=True, default=float))
