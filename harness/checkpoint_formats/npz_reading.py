"""Reads a flat `.npz` checkpoint into {name: float32 array}, undoing numpy's bfloat16 loss.

numpy has no bfloat16, so `np.savez` of a bfloat16 array stores its raw 2-byte records as a
void dtype ('V2'). The bytes are intact; viewing them as bfloat16 recovers the values (as
big_vision's `utils.recover_dtype` does), and float32 holds every bfloat16 exactly.
"""

import io
import math
import zipfile

import ml_dtypes
import numpy as np

from harness.checkpoint_formats import reading as files
from harness.errors import UsageError, one_line


def recover_float(array: np.ndarray) -> np.ndarray:
    """bfloat16 saved as 'V2' -> float32; other floats -> float32; anything else unchanged."""
    if array.dtype.kind == "V":
        if array.dtype.itemsize != 2:
            raise ValueError(f"void dtype {array.dtype} is not a bfloat16 record (2 bytes)")
        array = array.view(ml_dtypes.bfloat16)
    if array.dtype == ml_dtypes.bfloat16 or np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32)
    return array


def read_npz(path: str) -> dict[str, np.ndarray]:
    """All arrays of the archive at `path` (local or gs://), floats as float32."""
    try:
        # Read whole: np.load needs seeks, which remote gfile streams do badly.
        data = io.BytesIO(files.read_bytes(path))
        check_declared_sizes(data)
        with np.load(data, allow_pickle=False) as archive:
            return {name: recover_float(archive[name]) for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise UsageError(
            f"{path} is not a readable .npz archive ({one_line(error)[:200]}); check the path"
        ) from error


def check_declared_sizes(data: io.BytesIO) -> None:
    """ValueError for a member whose header declares more bytes than the member holds: numpy
    would allocate the declared shape first (a 149 GiB header in a tiny file), then fail."""
    with zipfile.ZipFile(data) as archive:
        for member in archive.infolist():
            if not member.filename.endswith(".npy"):
                continue
            with archive.open(member) as f:
                version = np.lib.format.read_magic(f)
                # numpy 1.26 reads every header version with this one (the public readers
                # are one per version).
                shape, _, dtype = np.lib.format._read_array_header(f, version)
                declared = math.prod(shape) * dtype.itemsize
                if declared > member.file_size:
                    raise ValueError(
                        f"array {member.filename[:-4]} declares shape {shape} of {dtype} "
                        f"({declared} bytes) in a member of {member.file_size} bytes"
                    )
    data.seek(0)
