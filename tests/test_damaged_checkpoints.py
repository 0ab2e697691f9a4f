"""Issue 26: a damaged or hostile checkpoint is one UsageError line naming what is wrong,
never a traceback, a hang, or silently wrong weights. One table per format, each case built
from a good checkpoint of tests/checkpoint_writers.py with one thing broken."""

import io
import os
import zipfile
from pathlib import Path

import msgpack
import numpy as np
import pytest

from harness.checkpoint_formats import vmoe_reference
from harness.errors import UsageError
from tests import checkpoint_writers as writers
from tests.test_imports import _import, _spec, _weights

# --- npz (vision_transformer / big_vision): each case returns the path to import. ---

KERNEL = "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"


def _good_flat() -> dict[str, np.ndarray]:
    return writers.vit_npz_names(_weights(_spec(), class_token=True, position_rows=5), False)


def _npz(tmp_path, edit=None) -> str:
    flat = _good_flat()
    if edit:
        edit(flat)
    path = str(tmp_path / "w.npz")
    writers.write_npz(path, flat)
    return path


def _set(value_of):
    def edit(flat):
        flat[KERNEL] = value_of(flat[KERNEL])

    return edit


def _zero_bytes(tmp_path) -> str:
    (tmp_path / "w.npz").write_bytes(b"")
    return str(tmp_path / "w.npz")


def _truncated(tmp_path) -> str:
    path = _npz(tmp_path)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])
    return path


def _huge_declared_shape(tmp_path) -> str:
    """A member whose header declares 149 GiB of float32 and holds 16 bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (40_000_000_000,)}
    )
    path = str(tmp_path / "w.npz")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{KERNEL}.npy", header.getvalue() + bytes(16))
    return path


def _symlink_to_dev_zero(tmp_path) -> str:
    os.symlink("/dev/zero", tmp_path / "w.npz")
    return str(tmp_path / "w.npz")


def _fifo(tmp_path) -> str:
    os.mkfifo(tmp_path / "w.npz")
    return str(tmp_path / "w.npz")


NPZ_CASES = [
    ("zero-byte npz", _zero_bytes, "not a readable .npz"),
    ("truncated npz", _truncated, "not a readable .npz"),
    ("149 GiB declared shape", _huge_declared_shape, "declares shape (40000000000,)"),
    ("symlink to /dev/zero", _symlink_to_dev_zero, "not a regular file"),
    ("FIFO", _fifo, "not a regular file"),
    ("NaN weight", lambda t: _npz(t, _set(lambda k: k * np.nan)), f"{KERNEL} holds NaN"),
    ("inf weight", lambda t: _npz(t, _set(lambda k: k + np.inf)), f"{KERNEL} holds NaN"),
    ("int32 weight", lambda t: _npz(t, _set(lambda k: k.astype(np.int32))), "dtype int32"),
    ("bool weight", lambda t: _npz(t, _set(lambda k: k > 0)), "dtype bool"),
    ("complex weight", lambda t: _npz(t, _set(lambda k: k.astype(np.complex64))), "complex64"),
    ("string weight", lambda t: _npz(t, _set(lambda k: k.astype(str))), "dtype <U"),
    (
        "datetime weight",
        lambda t: _npz(t, _set(lambda k: np.zeros(k.shape, "datetime64[s]"))),
        "datetime64",
    ),
]


def _one_line(path: str) -> str:
    with pytest.raises(UsageError) as caught:
        _import(path, _spec())
    message = str(caught.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize(
    "make, expected", [c[1:] for c in NPZ_CASES], ids=[c[0] for c in NPZ_CASES]
)
def test_a_damaged_npz_is_one_line(tmp_path, make, expected):
    assert expected in _one_line(make(tmp_path))


# --- V-MoE reference checkpoints: PREFIX.index + PREFIX.data-0000i-of-00002. ---

SHARDS = 2


def _vmoe(tmp_path) -> str:
    spec = _spec("vmoe")
    prefix = str(tmp_path / "ckpt")
    writers.write_vmoe(
        prefix, writers.vmoe_names(_weights(spec, class_token=True, position_rows=5))
    )
    return prefix


def _shard(prefix: str, i: int) -> str:
    return f"{prefix}.data-{i:05d}-of-{SHARDS:05d}"


def _load(path: str):
    with open(path, "rb") as f:
        return msgpack.unpackb(f.read(), raw=False, strict_map_key=False)


def _save(path: str, value) -> None:
    with open(path, "wb") as f:
        f.write(msgpack.packb(value, use_bin_type=True))


def _edit_shard(edit):
    def make(tmp_path) -> str:
        prefix = _vmoe(tmp_path)
        content = _load(_shard(prefix, 0))
        edit(content)
        _save(_shard(prefix, 0), content)
        return prefix

    return make


def _first_leaf(content) -> str:
    return next(k for k in content if k != writers.ARRAY_CHUNKS_MAGIC_KEY)


def _drop_chunk(content) -> None:
    chunks = content[_first_leaf(content)]
    chunks.pop()
    if not chunks:
        del content[_first_leaf(content)]


def _drop_every_chunk_of_a_leaf(content) -> None:
    del content[_first_leaf(content)]


def _duplicate_chunk(content) -> None:
    chunks = content[_first_leaf(content)]
    chunks.append(chunks[0])


def _slice_outside(content) -> None:
    subchunks, _ = content[_first_leaf(content)][0]
    bad = (slice(0, 10**6),)
    content[_first_leaf(content)][0] = [
        subchunks,
        msgpack.ExtType(writers.SLICE_ND, writers._slice_nd_bytes(bad)),
    ]


def _edit_index(edit):
    def make(tmp_path) -> str:
        prefix = _vmoe(tmp_path)
        index = _load(prefix + ".index")
        edit(index)
        _save(prefix + ".index", index)
        return prefix

    return make


def _index_info(shape, dtype: str) -> msgpack.ExtType:
    shaped = writers._packb((shape, dtype, False, {}))
    full = writers._slice_nd_bytes(tuple(slice(0, max(n, 0)) for n in shape))
    return msgpack.ExtType(writers.INDEX_INFO, writers._packb((shaped, (full,), (0,))))


def _set_head_bias(info):
    def edit(index) -> None:
        index["index"]["head"]["bias"] = info

    return edit


def _replace_file(suffix: str, data: bytes):
    def make(tmp_path) -> str:
        prefix = _vmoe(tmp_path)
        path = prefix + suffix
        content = Path(path).read_bytes()
        Path(path).write_bytes(data if data != b"HALF" else content[: len(content) // 2])
        return prefix

    return make


def _non_integer_key(content) -> None:
    content["x"] = content.pop(_first_leaf(content))


VMOE_CASES = [
    ("garbage index", _replace_file(".index", b"\xc1garbage"), "not a readable V-MoE"),
    ("zero-byte index", _replace_file(".index", b""), "not a readable V-MoE"),
    ("truncated index", _replace_file(".index", b"HALF"), "not a readable V-MoE"),
    ("index not a map", _edit_index(lambda i: i.update(index=[1, 2])), "not a map"),
    (
        "shard count not a number",
        _edit_index(lambda i: i.update(shard_count="two")),
        "shard_count 'two'",
    ),
    ("garbage shard", _replace_file(".data-00000-of-00002", b"\xc1"), "not a readable V-MoE"),
    ("truncated shard", _replace_file(".data-00000-of-00002", b"HALF"), "not a readable V-MoE"),
    ("no chunk marker", _edit_shard(lambda c: c.pop(writers.ARRAY_CHUNKS_MAGIC_KEY)), "marker"),
    ("a dropped chunk", _edit_shard(_drop_chunk), "is not covered exactly once"),
    ("a leaf's chunks all dropped", _edit_shard(_drop_every_chunk_of_a_leaf), "covered exactly"),
    ("a chunk twice", _edit_shard(_duplicate_chunk), "overlap"),
    ("a slice outside the array", _edit_shard(_slice_outside), "outside shape"),
    ("non-integer leaf key", _edit_shard(_non_integer_key), "not a readable V-MoE"),
    ("negative shape", _edit_index(_set_head_bias(_index_info((-5,), "float32"))), "(-5,)"),
    (
        "4 TiB shape",
        _edit_index(_set_head_bias(_index_info((2**40,), "float32"))),
        "array head/bias is not covered exactly once",
    ),
    ("bad dtype", _edit_index(_set_head_bias(_index_info((5,), "float99"))), "float99"),
]


@pytest.mark.parametrize(
    "make, expected", [c[1:] for c in VMOE_CASES], ids=[c[0] for c in VMOE_CASES]
)
def test_a_damaged_vmoe_checkpoint_is_one_line(tmp_path, make, expected):
    prefix = make(tmp_path)
    with pytest.raises(UsageError) as caught:
        vmoe_reference.read_arrays(prefix)
    message = str(caught.value)
    assert "\n" not in message and expected in message, message
