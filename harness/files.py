"""Writing files so that a reader (or a crash) never sees half of one, locally or on a URL
(gs://...; harness/storage.py)."""

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from harness import storage

# Results are shared data: everything the harness writes is readable by everyone, whatever the
# umask made of the temporary file (mkstemp creates it 0600).
FILE_MODE = 0o644


@contextlib.contextmanager
def replacing(path: str) -> Iterator[str]:
    """Yields a temporary local path to write; puts it at `path` when the block succeeds.
    Readers see the old file or the new one, never half of one; a failure leaves the old file
    as it was and no temporary file behind.

    Locally the temporary file sits beside `path` and is renamed over it. For a URL it sits in
    the system's temporary folder and is uploaded in one write, which an object store makes
    visible whole (see harness/storage.py)."""
    if storage.is_url(path):
        with tempfile.TemporaryDirectory(prefix="harness-upload-") as folder:
            temporary = os.path.join(folder, os.path.basename(path))
            yield temporary
            storage.upload(temporary, path)
        return
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    os.close(handle)
    try:
        yield temporary
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_text_atomically(path: str, text: str) -> None:
    with replacing(path) as temporary, open(temporary, "w") as f:
        f.write(text)


def write_json_atomically(path: str, payload: dict[str, Any]) -> None:
    """`payload` as indented JSON with sorted keys (numpy scalars become floats)."""
    write_text_atomically(path, json.dumps(payload, indent=2, sort_keys=True, default=float))
