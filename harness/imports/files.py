"""Reading checkpoint files from local disk or from any filesystem TensorFlow knows (gs://...).

Local paths go through the standard library and remote ones through `tf.io.gfile`, imported only
when a remote path is opened: importing TensorFlow takes seconds, and most imports are local.
"""

import glob as local_glob
import os
from typing import Any

from harness.errors import UsageError


def is_remote(path: str) -> bool:
    return "://" in path


def _gfile() -> Any:
    import tensorflow as tf  # seconds to import; only remote paths need it

    return tf.io.gfile


def read_bytes(path: str) -> bytes:
    if not exists(path):
        raise UsageError(f"{path} does not exist; check the checkpoint path")
    if is_remote(path):
        with _gfile().GFile(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def exists(path: str) -> bool:
    return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def is_dir(path: str) -> bool:
    return _gfile().isdir(path) if is_remote(path) else os.path.isdir(path)


def list_dir(path: str) -> list[str]:
    """Entry names (not paths) in a directory, without gfile's trailing '/' on folders."""
    if is_remote(path):
        return [name.rstrip("/") for name in _gfile().listdir(path)]
    return os.listdir(path)


def glob(pattern: str) -> list[str]:
    return sorted(_gfile().glob(pattern) if is_remote(pattern) else local_glob.glob(pattern))


def join(*parts: str) -> str:
    """os.path.join, which is also right for gs:// URLs ('/'-separated)."""
    return os.path.join(*parts)
