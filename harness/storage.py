"""The one place that knows about paths: a local path goes through os and open(), a URL
(gs://bucket/run, or any scheme TensorFlow's file system knows: ram://, hdfs://, ...) through
`tf.io.gfile`. Everything else in the harness passes plain str paths and calls these.

TensorFlow is imported only when a URL is touched: importing it takes seconds, and commands
that only read local files (and every `--help`) must start fast.

Object stores have no rename that readers see atomically (GCS renames copy object by object),
so a URL is never written through a temporary name: `write_bytes` uploads the whole content in
one write, and GCS creates an object from one upload atomically (a reader sees the old object
or the new one). Local writes keep harness.files' mkstemp + os.replace.
"""

import contextlib
import functools
import glob as local_glob
import os
import shutil
import socket
import stat
import tempfile
import urllib.parse
from collections.abc import Iterator
from typing import IO, Any

from harness.errors import UsageError, one_line

# Schemes orbax writes itself (etils.epath for files, tensorstore's gcs driver for arrays).
ORBAX_URL_PREFIXES = ("gs://",)


def is_url(path: str) -> bool:
    """Whether `path` names a file system by scheme (gs://, ram://, ...), not a local path."""
    return "://" in path


def local_form(path: str) -> str:
    """A `file://` URL as the local path it names ('file:///runs/a' -> '/runs/a'; also
    'file://localhost/runs/a'); any other path as it is. What guards a local path (the workdir
    lock) must see a file:// URL as that path, or a second run into it goes unnoticed."""
    parsed = urllib.parse.urlsplit(path)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return path
    return urllib.parse.unquote(parsed.path) or "/"


# A gs:// path is checked to be reachable before TensorFlow's GCS client first touches it:
# offline, that client retries with backoff for minutes (issue 26: a hang, then a traceback).
GCS_PREFIX = "gs://"
GCS_HOST, GCS_PORT = "storage.googleapis.com", 443
PROBE_TIMEOUT_S = 5.0


class Unreachable(UsageError):
    """A URL whose file system cannot be reached from here (no network, no DNS)."""


@functools.cache
def _connection_problem(host: str, port: int) -> str | None:
    """Why no TCP connection to host:port opens within PROBE_TIMEOUT_S, or None when one does
    (cached: one probe per process and endpoint)."""
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as error:
        return one_line(error) or type(error).__name__
    return None


def _gcs_endpoint() -> tuple[str, int]:
    """Cloud Storage, or the emulator TensorFlow's GCS client is pointed at."""
    emulator = os.environ.get("STORAGE_EMULATOR_HOST") or os.environ.get(
        "CLOUD_STORAGE_EMULATOR_ENDPOINT"
    )
    if emulator:
        parsed = urllib.parse.urlsplit(emulator if "://" in emulator else f"http://{emulator}")
        return parsed.hostname or "localhost", parsed.port or 80
    return GCS_HOST, GCS_PORT


def check_reachable(path: str) -> None:
    """Raises Unreachable (one line naming `path`) when `path` is on gs:// and Cloud Storage
    cannot be reached from this machine."""
    if not path.startswith(GCS_PREFIX):
        return
    host, port = _gcs_endpoint()
    problem = _connection_problem(host, port)
    if problem is not None:
        raise Unreachable(
            f"{path} cannot be reached: no connection to {host}:{port} ({problem}); run where "
            "Cloud Storage is reachable, or use a local path"
        )


def _gfile(path: str) -> Any:
    """tf.io.gfile, for `path` (a URL) once it is known to be reachable."""
    check_reachable(path)
    import tensorflow as tf  # seconds to import; only URLs need it

    return tf.io.gfile


def join(*parts: str) -> str:
    """os.path.join, which is also right for URLs ('/'-separated on every OS we run on)."""
    return os.path.join(*parts)


def relative(path: str, start: str) -> str:
    """`path` relative to the folder `start` above it (os.path.relpath, which would make a URL
    absolute against the working directory first)."""
    if not is_url(path):
        return os.path.relpath(path, start)
    prefix = start.rstrip("/") + "/"
    if not path.startswith(prefix):
        raise ValueError(f"{path} is not under {start}")
    return path[len(prefix) :]


def absolute(path: str) -> str:
    """The absolute form of a local path; a URL as it is (os.path.abspath would turn
    'gs://b/run' into '/cwd/gs:/b/run')."""
    return path if is_url(path) else os.path.abspath(path)


def exists(path: str) -> bool:
    return _gfile(path).exists(path) if is_url(path) else os.path.exists(path)


def isdir(path: str) -> bool:
    return _gfile(path).isdir(path) if is_url(path) else os.path.isdir(path)


def isfile(path: str) -> bool:
    if is_url(path):
        gfile = _gfile(path)
        return gfile.exists(path) and not gfile.isdir(path)
    return os.path.isfile(path)


def is_regular_file(path: str) -> bool:
    """A plain file: not a folder, and locally not a symlink, FIFO or device either (which
    replacing by rename would swap out, or writing would send elsewhere). On a URL, any
    object that is not a folder."""
    if is_url(path):
        return isfile(path)
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def size(path: str) -> int:
    """The size in bytes of the file at `path` (symlinks followed)."""
    return _gfile(path).stat(path).length if is_url(path) else os.path.getsize(path)


def makedirs(path: str) -> None:
    """Creates `path` and its parents; an existing directory is fine."""
    if is_url(path):
        _gfile(path).makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def listdir(path: str) -> list[str]:
    """Entry names (not paths), without gfile's trailing '/' on folders of object stores."""
    if is_url(path):
        return [name.rstrip("/") for name in _gfile(path).listdir(path)]
    return os.listdir(path)


def walk(top: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """os.walk's (folder, subfolder names, file names), top-down."""
    if not is_url(top):
        yield from os.walk(top)
        return
    for folder, subfolders, names in _gfile(top).walk(top):
        yield folder.rstrip("/"), [s.rstrip("/") for s in subfolders], list(names)


def glob(pattern: str) -> list[str]:
    return sorted(_gfile(pattern).glob(pattern) if is_url(pattern) else local_glob.glob(pattern))


@contextlib.contextmanager
def open_file(path: str, mode: str = "r", errors: str | None = None) -> Iterator[IO[Any]]:
    """open() for a local path, tf.io.gfile.GFile for a URL. gfile's own errors become OSError
    (FileNotFoundError for a missing file), so callers catch the same types for both."""
    if not is_url(path):
        with open(path, mode, errors=errors) as f:
            yield f
        return
    check_reachable(path)
    import tensorflow as tf

    try:
        with tf.io.gfile.GFile(path, mode) as f:
            yield f
    except tf.errors.NotFoundError as error:
        raise FileNotFoundError(f"{path}: {error.message}") from error
    except tf.errors.OpError as error:
        raise OSError(f"{path}: {error.message}") from error


def read_text(path: str, errors: str | None = None) -> str:
    with open_file(path, errors=errors) as f:
        text = f.read()
    if isinstance(text, bytes):  # gfile in text mode may hand back bytes for a binary file
        text = text.decode("utf-8", errors=errors or "strict")
    return text


def read_bytes(path: str) -> bytes:
    with open_file(path, "rb") as f:
        return f.read()


def write_url(path: str, data: bytes | str) -> None:
    """Writes a URL's whole content in one gfile write: on GCS the object appears complete on
    close (one upload is atomic), so no temporary name is needed, nor possible to rename
    atomically. Local paths go through harness.files, which keeps mkstemp + os.replace."""
    _forget_for_ram(path)
    with _gfile(path).GFile(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def upload(local_path: str, url: str) -> None:
    """Copies a local file to `url` in one gfile write (streamed, so a large event file is
    not read into memory; TensorFlow's GCS client uploads it as one object on close)."""
    _forget_for_ram(url)
    _gfile(url).copy(local_path, url, overwrite=True)


def _forget_for_ram(path: str) -> None:
    """TensorFlow's in-memory ram:// file system (what the tests stand in for gs:// with)
    appends to an existing file it is asked to write or copy over, where GCS and local disks
    replace it; removing the old file first gives ram:// the same result."""
    if path.startswith("ram://") and _gfile(path).exists(path):
        _gfile(path).remove(path)


def remove(path: str) -> None:
    if is_url(path):
        _gfile(path).remove(path)
    else:
        os.remove(path)


def rmtree(path: str) -> None:
    """Removes a directory and everything under it; a missing one is fine."""
    if is_url(path):
        if _gfile(path).exists(path):
            _gfile(path).rmtree(path)
    else:
        shutil.rmtree(path, ignore_errors=True)


def rename(source: str, target: str) -> None:
    """Renames a file or folder over `target` (os.replace locally: atomic; on an object store a
    copy and delete per object, which readers may see half done)."""
    if is_url(source) or is_url(target):
        check_reachable(source)
        _gfile(target).rename(source, target, overwrite=True)
    else:
        os.replace(source, target)


def copy_tree(source: str, target: str) -> None:
    """Copies every file under `source` to the same place under `target`; either side may be
    local or a URL (gfile reads and writes both)."""
    check_reachable(source)
    gfile = _gfile(target)
    for folder, _, names in walk(source):
        below = relative(folder, source) if folder.rstrip("/") != source.rstrip("/") else ""
        destination = join(target, below) if below else target
        makedirs(destination)
        for name in names:
            _forget_for_ram(join(destination, name))
            gfile.copy(join(folder, name), join(destination, name), overwrite=True)


@contextlib.contextmanager
def local_copy(directory: str) -> Iterator[str]:
    """A local path holding `directory`'s files: the directory itself when it is local, else a
    temporary download of it, removed after the block (for libraries that read local files
    only, like jax's profiler and orbax on schemes other than gs://)."""
    if not is_url(directory):
        yield directory
        return
    with tempfile.TemporaryDirectory(prefix="harness-download-") as local:
        target = join(local, os.path.basename(directory.rstrip("/")))
        copy_tree(directory, target)
        yield target


def orbax_writes(path: str) -> bool:
    """Whether orbax reads and writes checkpoints at `path` itself: local paths and gs://.
    orbax 0.5.9 resolves paths with etils.epath, which knows gs://, s3:// and az:// only, and
    writes arrays with tensorstore, which it points at its gcs driver for gs:// and at the
    local 'file' driver for anything else, so an s3:// or ram:// path would land on local disk."""
    return not is_url(path) or path.startswith(ORBAX_URL_PREFIXES)
