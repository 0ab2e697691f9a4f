"""Memory plan: the dump parser, the batch checks, the per-layer extrapolation algebra, scaling
over the data axis, the chip table, and (slow) a real compiled plan of a tiny model."""

import dataclasses

import gin
import pytest

from harness import gin_config
from harness.measure import memory_plan
from harness.measure.memory_plan import GIB, MemoryPlan
from models.specs import ModelSpec

DUMP = """BufferAssignment:
allocation 0: size 262144, parameter 22, shape |f32[4,64,256]| at ShapeIndex {}, maybe-live-out:
 value: <7925 param.41 @0> (size=262144,offset=0): f32[4,64,256]{2,1,0}
allocation 1: size 50176, parameter 125, shape |f32[16,28,28,1]| at ShapeIndex {}:
allocation 2: size 16, constant:
allocation 3: size 1, thread-local:
allocation 4: size 4, thread-local:
allocation 5: size 1072, output shape is |(s32[], f32[])|, maybe-live-out:
allocation 6: size 4, maybe-live-out:
allocation 7: size 6223280, preallocated-temp:
 value: <8 fusion.1 @0> (size=1024,offset=0): f32[256]{0}

Total bytes used: 6536697 (6.23MiB)
"""


def test_temp_bytes_count_only_temporary_allocations():
    assert memory_plan.temp_bytes_of_buffer_assignment(DUMP) == 6223280 + 1 + 4


def _spec(gin_file: str, *bindings: str) -> ModelSpec:
    gin_config.parse_gin([gin_file], list(bindings))
    try:
        return ModelSpec()
    finally:
        gin.clear_config()


@pytest.mark.parametrize(
    ("batch", "named"),
    [(4000, "--batch=4000 does not split over the 256"), (2048 + 256 * 4, "MoeSpec.group_images")],
)
def test_bad_batches_are_one_line_naming_the_value(batch, named):
    spec = _spec("gin/vmoe_h14.gin")
    with pytest.raises(ValueError, match=named) as error:
        memory_plan.check_batch(spec, (8, 32, 1), batch)
    assert "\n" not in str(error.value)
    assert memory_plan.check_batch(spec, (8, 32, 1), 4096) == 16


def _fake_temp(base: int, dense: int, sparse: int):
    """A temp size that is exactly linear per block kind, as the extrapolation assumes."""

    def temp(spec, compile_mesh, per_device, compute_dtype, loss) -> int:
        moe = len(spec.moe_layers)
        return base + dense * (spec.vit.num_layers - moe) + sparse * moe

    return temp


CONFIGS = ("gin/vit_h14.gin", "gin/vmoe_h14.gin", "gin/vmoe_h14_last5.gin", "gin/widenet_h.gin")


@pytest.mark.parametrize("gin_file", CONFIGS)
def test_extrapolation_recovers_a_linear_per_block_cost(monkeypatch, gin_file):
    monkeypatch.setattr(memory_plan, "train_step_temp_bytes", _fake_temp(1000, 30, 70))
    spec = _spec(gin_file)
    moe = len(spec.moe_layers)
    expected = 1000 + 30 * (spec.vit.num_layers - moe) + 70 * moe
    total, how = memory_plan.extrapolated_temp_bytes(spec, (1, 1, 1), 8, "float32", "softmax")
    assert total == expected
    assert f"to {spec.vit.num_layers}" in how or f"{moe} MoE blocks" in how


def test_unequal_placements_compile_a_third_model(monkeypatch):
    seen = []

    def temp(spec, *_):
        seen.append((spec.vit.num_layers, tuple(spec.moe_layers)))
        return 1

    monkeypatch.setattr(memory_plan, "train_step_temp_bytes", temp)
    memory_plan.extrapolated_temp_bytes(
        _spec("gin/vmoe_h14_last5.gin"), (1, 1, 1), 8, "float32", "softmax"
    )
    assert seen == [(2, (1,)), (4, (1, 3)), (4, (3,))]


def _plan(**changes) -> MemoryPlan:
    plan = MemoryPlan(
        mesh=(8, 32, 1),
        global_batch=4096,
        per_device_batch=16,
        params=2 * GIB,
        optimizer=4 * GIB,
        batch=16 * 1000,
        activations=8 * GIB,
        method="m",
    )
    return dataclasses.replace(plan, **changes)


def test_total_and_fits():
    plan = _plan()
    assert plan.total == 14 * GIB + 16000
    chips = {chip.name: chip for chip in memory_plan.CHIPS}
    assert plan.fits(chips["TPU v3 core"]) and plan.fits(chips["H100 80GB"])
    assert not _plan(activations=10 * GIB).fits(chips["TPU v3 core"])
    record = plan.as_dict()
    assert record["total"] == plan.total and record["fits"]["TPU v3 core"] is True


def test_scaling_over_the_data_axis_keeps_weights_and_scales_per_image_parts():
    scaled = _plan().scaled_to_batch((2, 32, 1), 4096)  # 64 images per device, 4x as many
    assert (scaled.params, scaled.optimizer) == (2 * GIB, 4 * GIB)
    assert (scaled.per_device_batch, scaled.batch, scaled.activations) == (64, 64000, 32 * GIB)
    assert "scaled from 16 to 64" in scaled.method


def test_chip_table_has_the_common_chips_with_sources():
    chips = {chip.name: chip for chip in memory_plan.CHIPS}
    for name in ("TPU v3 core", "TPU v4 chip", "TPU v5e chip", "A100 40GB", "A100 80GB"):
        assert name in chips
    assert chips["TPU v3 core"].bytes == 16 * GIB
    assert chips["H100 80GB"].bytes == 80 * 10**9
    assert chips["H200 141GB"].bytes == 141 * 10**9
    assert all(chip.source for chip in chips.values())


@pytest.mark.slow
def test_compiled_plan_of_a_tiny_model_grows_with_the_batch():
    spec = _spec("gin/cpu/vit.gin", "VitSpec.num_layers=4")
    small = memory_plan.plan(spec, (2, 2, 1), 16)
    large = memory_plan.plan(spec, (2, 2, 1), 64)
    assert small.per_device_batch == 4 and large.per_device_batch == 16
    assert 0 < small.activations < large.activations
    assert small.params == large.params > 0 and small.optimizer == 2 * small.params
    assert "compiled at depths 2 and 4" in small.method and "(1, 2, 1)" in small.method
