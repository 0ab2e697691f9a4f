"""models/scan_layout.py: the one conversion between scanned and per-block parameter layouts,
on hand-written trees whose every value says which block it belongs to."""

import jax
import numpy as np
import pytest

from models import builders, scan_layout


def _blocks(value: np.ndarray) -> list[float]:
    return [float(v) for v in np.ravel(value)]


def test_a_lone_scan_puts_repeat_r_of_block_j_at_block_r_times_period_plus_j():
    params = {
        "encoder/repeat/sub/x_layers_0/w": np.array([[0.0], [2.0]]),
        "encoder/repeat/sub/x_layers_1/w": np.array([[1.0], [3.0]]),
        "head/w": np.ones(1),
    }
    flat = scan_layout.to_blocks(params)
    assert sorted(flat) == [f"encoder/x_layers_{i}/w" for i in range(4)] + ["head/w"]
    for i in range(4):
        assert _blocks(flat[f"encoder/x_layers_{i}/w"]) == [float(i)]


def test_segments_number_their_blocks_after_the_segments_before_them():
    # Last-n: 3 dense blocks scanned one at a time, then 2 (dense, MoE) pairs.
    params = {
        "encoder/segment_0/repeat/sub/x_layers_0/w": np.array([[0.0], [1.0], [2.0]]),
        "encoder/segment_1/repeat/sub/x_layers_0/w": np.array([[3.0], [5.0]]),
        "encoder/segment_1/repeat/sub/x_layers_1/moe/w": np.array([[4.0], [6.0]]),
    }
    found = scan_layout.segments(params)
    assert [(s.key, s.first_block, s.period, s.repeats) for s in found] == [
        ("segment_0", 0, 1, 3),
        ("segment_1", 3, 2, 2),
    ]
    flat = scan_layout.to_blocks(params)
    for i in (0, 1, 2, 3, 5):
        assert _blocks(flat[f"encoder/x_layers_{i}/w"]) == [float(i)]
    for i in (4, 6):
        assert _blocks(flat[f"encoder/x_layers_{i}/moe/w"]) == [float(i)]


def test_widenet_norms_unstack_and_shared_weights_stay():
    params = {
        "encoder/attention_norms/scale": np.arange(3.0)[:, None],
        "encoder/moe_norms/bias": 10 + np.arange(3.0)[:, None],
        "encoder/moe/wi": np.zeros((2, 4, 5)),
    }
    flat = scan_layout.to_blocks(params)
    assert sorted(flat) == sorted(
        ["encoder/moe/wi"]
        + [f"encoder/attention_norms_{i}/scale" for i in range(3)]
        + [f"encoder/moe_norms_{i}/bias" for i in range(3)]
    )
    assert flat["encoder/moe/wi"].shape == (2, 4, 5)
    assert _blocks(flat["encoder/moe_norms_2/bias"]) == [12.0]


@pytest.mark.parametrize(
    "scanned",
    [
        {
            "encoder/segment_0/repeat/sub/x_layers_0/w": np.arange(6.0).reshape(3, 2),
            "encoder/segment_1/repeat/sub/x_layers_0/w": np.arange(4.0).reshape(2, 2),
            "encoder/segment_1/repeat/sub/x_layers_1/w": -np.arange(4.0).reshape(2, 2),
            "head/b": np.ones(2),
        },
        {"encoder/attention_norms/scale": np.arange(8.0).reshape(4, 2), "encoder/moe/w": np.eye(2)},
    ],
)
def test_to_layout_inverts_to_blocks_and_names_the_blocks_it_stacked(scanned):
    blocks = scan_layout.to_blocks(scanned)
    wanted = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in scanned.items()}
    back, names = scan_layout.to_layout(blocks, wanted)
    assert sorted(back) == sorted(scanned)
    for path, value in scanned.items():
        np.testing.assert_array_equal(back[path], value)
    stacked = [p for p in scanned if p.startswith("encoder/") and "/moe/" not in p]
    assert all(" ... " in names[p] for p in stacked)
    # Abstract trees convert too (init_from works per block on the model's shapes).
    abstract = scan_layout.to_blocks(wanted)
    assert {k: v.shape for k, v in abstract.items()} == {k: v.shape for k, v in blocks.items()}


def test_to_layout_leaves_a_stack_with_a_missing_block_for_the_strict_fill_to_name():
    wanted = {"encoder/repeat/sub/x_layers_0/w": jax.ShapeDtypeStruct((3, 2), np.float32)}
    blocks = {f"encoder/x_layers_{i}/w": np.zeros(2) for i in (0, 2)}
    tensors, _ = scan_layout.to_layout(blocks, wanted)
    assert sorted(tensors) == ["encoder/x_layers_0/w", "encoder/x_layers_2/w"]


def test_per_block_ndim_ignores_the_depth_axis():
    bias = np.zeros((4, 8))
    assert scan_layout.per_block_ndim("encoder/repeat/sub/x_layers_0/ff/bias/b", bias) == 1
    assert scan_layout.per_block_ndim("encoder/moe_norms/scale", bias) == 1
    assert scan_layout.per_block_ndim("encoder/moe/bi", bias) == 2  # [E, H]: one per expert


@pytest.mark.parametrize(
    "placement, num_layers, want",
    [
        ("every_2", 12, [(0, 12)]),
        ("last_5", 32, [(0, 22), (22, 10)]),  # V-MoE-H/14 Last-5
        ("last_2", 8, [(0, 4), (4, 4)]),
        ("tail_6", 12, [(0, 6), (6, 6)]),  # Soft MoE's second half
    ],
)
def test_scan_segments_split_a_stack_into_repeating_parts(placement, num_layers, want):
    from models.specs import moe_layer_indices

    assert builders.scan_segments(num_layers, moe_layer_indices(placement, num_layers)) == want
    assert builders.scan_segments(num_layers, []) == [(0, num_layers)]
