"""The safetensors file format (huggingface/safetensors), encoded and decoded with numpy.

The project venv has no `safetensors` package, and the format is small enough to own:
  8 bytes    N, the header's length, unsigned little-endian
  N bytes    a JSON object: {name: {"dtype": "F32", "shape": [...], "data_offsets": [b, e]}}
             plus an optional "__metadata__": {str: str}; padded with spaces so that the
             data starts 8-byte aligned (the reference writer pads the same way)
  the rest   every tensor's bytes, C order, little-endian, at [b, e) from the data's start

The decoder is strict like the reference reader: offsets must tile the data exactly, with no
gap, overlap or trailing byte, and each tensor's byte count must match its shape and dtype.
"""

import json
import struct
from collections.abc import Mapping

import ml_dtypes
import numpy as np

HEADER_LENGTH_BYTES = 8
ALIGNMENT = 8
METADATA_KEY = "__metadata__"
# Cap on the header, as the reference reader has (100 MB), so a hostile file cannot make us
# parse gigabytes of JSON.
MAX_HEADER_BYTES = 100_000_000

DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}


class FormatError(ValueError):
    """The bytes are not a well-formed safetensors file."""


def dtype_name(dtype: np.dtype) -> str:
    """The safetensors name of a numpy dtype ('F32', 'BF16', ...)."""
    little = _little_endian(np.dtype(dtype))
    if little not in _NAMES:
        raise ValueError(f"dtype {dtype} has no safetensors name; known: {sorted(DTYPES)}")
    return _NAMES[little]


def _little_endian(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype


def encode(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """The file's bytes, with the tensors' data in name order."""
    header: dict[str, object] = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError("safetensors metadata must map str to str")
        header[METADATA_KEY] = dict(metadata)
    buffers = []
    offset = 0
    for name in sorted(tensors):
        array = np.asarray(tensors[name])
        data = np.ascontiguousarray(array, dtype=_little_endian(array.dtype)).tobytes()
        header[name] = {
            "dtype": dtype_name(array.dtype),
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        buffers.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % ALIGNMENT)
    return struct.pack("<Q", len(text)) + text + b"".join(buffers)


def _header(data: bytes) -> dict[str, object]:
    if len(data) < HEADER_LENGTH_BYTES:
        raise FormatError("shorter than the 8-byte header length")
    (length,) = struct.unpack("<Q", data[:HEADER_LENGTH_BYTES])
    if length > MAX_HEADER_BYTES or HEADER_LENGTH_BYTES + length > len(data):
        raise FormatError(f"header length {length} does not fit the file")
    try:
        header = json.loads(data[HEADER_LENGTH_BYTES : HEADER_LENGTH_BYTES + length])
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise FormatError(f"header is not JSON ({error})") from error
    if not isinstance(header, dict):
        raise FormatError("header is not a JSON object")
    return header


def _metadata(header: dict[str, object]) -> dict[str, str]:
    metadata = header.pop(METADATA_KEY, None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise FormatError(f"{METADATA_KEY} must map str to str")
    return metadata


def _tensor(name: str, entry: object, body: memoryview) -> tuple[tuple[int, int], np.ndarray]:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise FormatError(f"tensor {name!r} needs exactly dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPES:
        raise FormatError(f"tensor {name!r} has dtype {dtype!r}; known: {sorted(DTYPES)}")
    if not (isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise FormatError(f"tensor {name!r} has a malformed shape {shape!r}")
    if not (
        isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(n, int) for n in offsets)
    ):
        raise FormatError(f"tensor {name!r} has malformed data_offsets {offsets!r}")
    begin, end = offsets
    expected = int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype].itemsize
    if not 0 <= begin <= end <= len(body) or end - begin != expected:
        raise FormatError(
            f"tensor {name!r}: data_offsets {offsets} do not hold the {expected} bytes of "
            f"{dtype} {shape}"
        )
    array = np.frombuffer(body[begin:end], dtype=DTYPES[dtype]).reshape(shape)
    return (begin, end), array.copy()  # detached from the file's bytes, and writable


def decode(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors by name, metadata) of a safetensors file's bytes. Raises FormatError."""
    header = _header(data)
    metadata = _metadata(header)
    (length,) = struct.unpack("<Q", data[:HEADER_LENGTH_BYTES])
    body = memoryview(data)[HEADER_LENGTH_BYTES + length :]
    tensors, spans = {}, []
    for name, entry in header.items():
        span, tensors[name] = _tensor(name, entry, body)
        spans.append(span)
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise FormatError(f"tensor data has a gap or overlap at byte {begin}")
        position = end
    if position != len(body):
        raise FormatError(f"{len(body) - position} bytes after the last tensor")
    return tensors, metadata
