"""Memory plan: the dump parser, the batch checks, the per-layer and FSDP extrapolation algebra,
exact weight / Adam / accumulator bytes under FSDP, moving a plan to another data axis, the chip
table, and (slow) a real compiled plan of a tiny model with and without micro-batches."""

import dataclasses
import math

import gin
import pytest

from harness.config import gin_config
from harness.measure import memory_plan, params_flops, plan_meshes, step_temporaries
from harness.measure.memory_plan import GIB, MemoryPlan
from harness.measure.step_temporaries import Step, Temporaries
from models import builders
from models.specs import MESH_AXES, ModelSpec

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
    assert step_temporaries.temp_bytes_of_buffer_assignment(DUMP) == 6223280 + 1 + 4


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
        plan_meshes.check_batch(spec, (8, 32, 1), batch)
    assert "\n" not in str(error.value)
    assert plan_meshes.check_batch(spec, (8, 32, 1), 4096) == 16


def _fake_temp(base: int, dense: int, sparse: int, split: int = 0):
    """A temp size that is exactly linear per block kind, as the extrapolation assumes, plus
    `split` bytes divided over the compile mesh's data axis, as the FSDP fit assumes."""

    def temp(spec, compile_mesh, step) -> int:
        moe = len(spec.moe_layers)
        layers = base + dense * (spec.vit.num_layers - moe) + sparse * moe
        return layers + split // compile_mesh[0]

    return temp


CONFIGS = ("gin/vit_h14.gin", "gin/vmoe_h14.gin", "gin/vmoe_h14_last5.gin", "gin/widenet_h.gin")


@pytest.mark.parametrize("gin_file", CONFIGS)
def test_extrapolation_recovers_a_linear_per_block_cost(monkeypatch, gin_file):
    monkeypatch.setattr(step_temporaries, "train_step_temp_bytes", _fake_temp(1000, 30, 70))
    spec = _spec(gin_file)
    moe = len(spec.moe_layers)
    expected = 1000 + 30 * (spec.vit.num_layers - moe) + 70 * moe
    total, how = step_temporaries.extrapolated_temp_bytes(spec, (1, 1, 1), Step(8))
    assert total == expected
    assert f"to {spec.vit.num_layers}" in how or f"{moe} MoE blocks" in how


def test_unequal_placements_compile_a_third_model(monkeypatch):
    seen = []

    def temp(spec, *_):
        seen.append((spec.vit.num_layers, tuple(spec.moe_layers)))
        return 1

    monkeypatch.setattr(step_temporaries, "train_step_temp_bytes", temp)
    step_temporaries.extrapolated_temp_bytes(_spec("gin/vmoe_h14_last5.gin"), (1, 1, 1), Step(8))
    assert seen == [(2, (1,)), (4, (1, 3)), (4, (3,))]


def test_fsdp_compiles_the_data_axis_at_2_and_4_and_fits_fixed_plus_split_over_data(
    monkeypatch,
):
    meshes = []

    def temp(spec, compile_mesh, step):
        meshes.append(compile_mesh)
        return _fake_temp(1000, 30, 0, split=4000)(spec, compile_mesh, step)

    monkeypatch.setattr(step_temporaries, "train_step_temp_bytes", temp)
    spec = _spec("gin/vit_h14.gin")
    fixed = 1000 + 30 * spec.vit.num_layers
    fsdp = step_temporaries.temporaries(spec, (16, 1, 2), Step(8, shard_params_over_data=True))
    assert sorted(set(meshes)) == [(2, 1, 2), (4, 1, 2)]
    assert (fsdp.total, fsdp.split_over_data) == (fixed + 250, 250)
    assert "+ 0.00 GiB / data, at data=16" in fsdp.how
    meshes.clear()
    plain = step_temporaries.temporaries(spec, (16, 1, 2), Step(8))
    assert set(meshes) == {(1, 1, 2)}  # no FSDP: the data axis only replicates
    assert (plain.total, plain.split_over_data) == (fixed + 4000, 0)


def test_plan_devices_are_expert_x_model_or_four_times_that_under_fsdp():
    assert plan_meshes.device_count((64, 1, 16), False) == 16
    assert plan_meshes.device_count((64, 1, 16), True) == 64
    assert plan_meshes.device_count((1, 8, 1), True) == 8  # data=1: FSDP splits nothing


def _independent_fsdp_bytes(spec: ModelSpec, mesh: tuple[int, int, int]) -> int:
    """Weight bytes per device counted from praxis's metadata with FSDP's rule written out:
    a weight is split data-ways more if a dimension no axis splits is divisible by data."""
    sizes = dict(zip(MESH_AXES, mesh, strict=True))
    variables = params_flops.abstract_variables(builders.build_model(spec, list(mesh)), spec)
    total = 0
    for _, weight in params_flops.weights_with_paths(variables):
        shape = params_flops.full_shape(weight)
        axes = [
            (a,) if isinstance(a, str) else a for a in params_flops.full_split_dims_mapping(weight)
        ]
        split = [isinstance(a, tuple | list) for a in axes]
        shards = math.prod(sizes[name] for a, s in zip(axes, split, strict=True) if s for name in a)
        if any(not s and size % mesh[0] == 0 for size, s in zip(shape, split, strict=True)):
            shards *= mesh[0]
        total += 4 * math.ceil(math.prod(shape) / shards)
    return total


@pytest.mark.parametrize("mesh", [(4, 2, 1), (2, 4, 1)])
def test_fsdp_weight_adam_and_accumulator_bytes_are_exact(monkeypatch, mesh):
    monkeypatch.setattr(
        step_temporaries, "temporaries", lambda *_: Temporaries(10**7, 10**6, "faked")
    )
    spec = _spec("gin/cpu/vmoe.gin")
    plain = memory_plan.plan(spec, mesh, 128)
    fsdp = memory_plan.plan(spec, mesh, 128, shard_params_over_data=True, microbatches=2)
    variables = params_flops.abstract_variables(builders.build_model(spec, list(mesh)), spec)
    assert plain.params == params_flops.param_bytes_per_device(variables, mesh, MESH_AXES)
    assert fsdp.params == _independent_fsdp_bytes(spec, mesh)
    # By hand: FSDP divides every weight by data but those with no free dimension it
    # divides: the MoE blocks' bi [8 experts, 256] (already split over expert and model) and,
    # at data=4, the 10-class head bias (40 bytes).
    bi = 2 * 8 * 256 * 4 // mesh[1]  # two MoE blocks
    unsplit = bi + (40 if mesh[0] == 4 else 0)
    assert fsdp.params == (plain.params - unsplit) // mesh[0] + unsplit
    assert {(4, 2, 1): (1618472, 410792), (2, 4, 1): (1089064, 546580)}[mesh] == (
        plain.params,
        fsdp.params,
    )
    assert fsdp.optimizer == 2 * fsdp.params and fsdp.grad_accumulator == fsdp.params
    assert plain.grad_accumulator == 0 and not plain.shard_params_over_data
    # The compiled step holds the accumulator; the plan counts it on its own line, once.
    assert fsdp.activations == 10**7 - fsdp.params
    assert fsdp.activations_split_over_data == 10**6 - fsdp.params
    assert fsdp.total == 3 * fsdp.params + fsdp.batch + 10**7
    record = fsdp.as_dict()
    assert record["shard_params_over_data"] is True and record["microbatches"] == 2
    assert "FSDP, over 'data' by harness/runtime/fsdp.py" in fsdp.method
    assert "2 micro-batches of 8 images" in memory_plan.format_plan(fsdp)


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


def test_a_plan_moves_to_another_data_axis_with_exact_weights_and_scaled_activations():
    moved = _plan().on_mesh((2, 32, 1), params=GIB)  # 64 images per device, 4x as many
    assert (moved.params, moved.optimizer, moved.grad_accumulator) == (GIB, 2 * GIB, 0)
    assert (moved.per_device_batch, moved.batch, moved.activations) == (64, 64000, 32 * GIB)
    assert "64 images per device" in moved.method
    # FSDP: the part split over data follows 1/data, the rest the images per micro-batch, so
    # micro-batches of the images compiled keep it as measured.
    fsdp = _plan(
        shard_params_over_data=True,
        microbatches=2,
        grad_accumulator=2 * GIB,
        activations=8 * GIB,
        activations_split_over_data=2 * GIB,
    )
    moved = fsdp.on_mesh((32, 32, 1), params=GIB // 2, microbatches=1)  # 4 images, 1 micro
    assert moved.activations_split_over_data == GIB // 2
    assert moved.activations == GIB // 2 + 6 * GIB // 2
    assert (moved.grad_accumulator, moved.microbatches) == (0, 1)


def test_chip_table_has_the_common_chips_with_sources():
    chips = {chip.name: chip for chip in memory_plan.CHIPS}
    for name in ("TPU v3 core", "TPU v4 chip", "TPU v5e chip", "A100 40GB", "A100 80GB"):
        assert name in chips
    assert chips["TPU v3 core"].bytes == 16 * GIB
    assert chips["H100 80GB"].bytes == 80 * 10**9
    assert chips["H200 141GB"].bytes == 141 * 10**9
    assert all(chip.source for chip in chips.values())


@pytest.mark.slow
def test_compiled_plan_of_a_tiny_model_holds_one_micro_batch_at_a_time():
    spec = _spec("gin/cpu/vit.gin", "VitSpec.num_layers=4")
    whole = memory_plan.plan(spec, (2, 2, 1), 64)
    accumulated = memory_plan.plan(spec, (2, 2, 1), 64, microbatches=4)
    assert whole.per_device_batch == accumulated.per_device_batch == 16
    assert accumulated.microbatch_images == 4 and accumulated.batch == whole.batch
    # 4 images' activations live instead of 16, for one params-sized f32 accumulator.
    assert 0 < accumulated.activations < whole.activations
    assert accumulated.total < whole.total
    assert accumulated.grad_accumulator == whole.params > 0 and whole.grad_accumulator == 0
    assert whole.optimizer == 2 * whole.params
    assert "compiled at depths 2 and 4" in whole.method and "(1, 2, 1)" in whole.method
    assert "4-micro-batch scan (4 images each)" in accumulated.method
