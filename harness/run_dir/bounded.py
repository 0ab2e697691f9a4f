"""Reading a file someone else made: a regular file only, within a size limit per kind, and
JSON that is not nested past what the parser can take.

A symlink to /dev/zero would be read until memory runs out, and a FIFO would block the reader
forever; both are refused from the file's status before it is opened. Every refusal is one
UnreadableFile line naming the file and what to do, which readers that skip damaged run
directories (the report) catch as a warning.
"""

import json
import os
import stat
from typing import Any

from harness import storage
from harness.errors import UsageError
from harness.run_dir import names

MIB = 2**20
# Generous for what the harness writes (a paper run's results.json with per-layer routing
# heatmaps is well under 1 MiB), small enough to read into memory without thought.
LIMITS = {
    names.RESULTS_FILE: 64 * MIB,
    names.SWEEP_FILE: 16 * MIB,
    names.FEWSHOT_FILE: 16 * MIB,
    names.EXPERIMENT_FILE: 1 * MIB,
    names.CHECKSUM_FILE: 16 * MIB,
    names.ATTEMPTS_FILE: 16 * MIB,
    names.INIT_FROM_FILE: 1 * MIB,
    names.STEP_TIMES_FILE: 16 * MIB,
    names.DIVERGED_FILE: 1 * MIB,
    names.CONFIG_FILE: 4 * MIB,
}
DEFAULT_LIMIT = 16 * MIB
# TensorBoard event files: a long paper run logging scalars every few steps stays far below.
EVENT_FILE_LIMIT = 1024 * MIB


class UnreadableFile(UsageError):
    """A file that is not a regular file, is over its size limit, or is not valid JSON."""


def limit_for(path: str) -> int:
    return LIMITS.get(os.path.basename(path.rstrip("/")), DEFAULT_LIMIT)


def check_regular(path: str, limit: int | None) -> int:
    """The size of `path`, a regular file (symlinks followed) of at most `limit` bytes (None:
    any size); UnreadableFile otherwise, FileNotFoundError when it does not exist."""
    if storage.is_url(path):
        size = storage.size(path)
    else:
        status = os.stat(path)
        if not stat.S_ISREG(status.st_mode):
            raise UnreadableFile(
                f"{path} is not a regular file (a device, FIFO, socket or directory); it is "
                "not read: replace it with the file itself"
            )
        size = status.st_size
    if limit is not None and size > limit:
        raise UnreadableFile(
            f"{path} is {size} bytes, over the {limit}-byte limit for this kind of file; "
            "it is not read: replace it with the file the harness wrote"
        )
    return size


def check_event_files(logdir: str) -> None:
    """Refuses (UnreadableFile) a TensorBoard event file in `logdir` (any name holding
    'tfevents', as TensorBoard's reader picks them) that is not a regular file within
    EVENT_FILE_LIMIT: the reader would block on a FIFO and read /dev/zero forever."""
    if storage.is_url(logdir) or not os.path.isdir(logdir):
        return
    for name in sorted(os.listdir(logdir)):
        if "tfevents" in name:
            check_regular(os.path.join(logdir, name), EVENT_FILE_LIMIT)


def read_bytes(path: str, limit: int | None = None) -> bytes:
    """The bytes of the regular file `path`, refusing more than `limit` (see check_regular);
    at most limit + 1 bytes are ever read, should the file grow meanwhile."""
    check_regular(path, limit)
    with storage.open_file(path, "rb") as f:
        data = f.read() if limit is None else f.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise UnreadableFile(f"{path} grew past the {limit}-byte limit while it was read")
    return data


def read_text(path: str, limit: int | None = None) -> str:
    data = read_bytes(path, limit_for(path) if limit is None else limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UnreadableFile(f"{path} is not UTF-8 text ({error.reason})") from error


def read_json(path: str, limit: int | None = None) -> Any:
    """The JSON value in `path`, within its kind's size limit (LIMITS by file name)."""
    text = read_text(path, limit)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UnreadableFile(f"{path} is not valid JSON ({error})") from error
    except RecursionError as error:
        raise UnreadableFile(f"{path} is JSON nested too deeply to be one we wrote") from error


def read_json_object(path: str, limit: int | None = None) -> dict[str, Any]:
    """`read_json` of a file that must hold a JSON object."""
    value = read_json(path, limit)
    if not isinstance(value, dict):
        raise UnreadableFile(f"{path} holds a JSON {type(value).__name__}, not an object")
    return value
