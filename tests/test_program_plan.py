"""The memory plan from the program (JAX's residuals and the trainer's partition specs), the
papers' facts it must reproduce, the step cost, and the recommendations; all traced abstractly
(no compile)."""

import dataclasses
import json
import math

import gin
import pytest

from harness.cli import inspect
from harness.config import gin_config
from harness.config.train_spec import TrainSpec
from harness.errors import UsageError
from harness.measure import (
    paper_costs,
    plan_devices,
    program_plan,
    recommend,
    residual_memory,
    step_cost,
)
from models.specs import ModelSpec

GIB = 2**30
TPU_V3 = plan_devices.plan_device("tpuv3-core")


def _parse(path: str, *bindings: str) -> tuple[ModelSpec, TrainSpec]:
    gin_config.parse_gin([path], list(bindings))
    try:
        return ModelSpec(), TrainSpec()
    finally:
        gin.clear_config()


def _block_residuals(spec: ModelSpec, remat: str, images: int) -> int:
    (block,) = residual_memory.residuals(spec, images, "bfloat16", "sigmoid", remat=remat).blocks
    return block.per_block


@pytest.mark.slow
def test_full_remat_keeps_only_the_block_input_and_under_a_quarter_of_none():
    spec, _ = _parse("gin/vit_b16.gin")
    images, tokens = 2, 197
    full = _block_residuals(spec, "full", images)
    none = _block_residuals(spec, "none", images)
    # nothing_saveable keeps the block's bf16 input [images, tokens, D] and nothing else.
    assert full == images * tokens * spec.vit.model_dims * 2
    assert full < none / 4
    assert full < _block_residuals(spec, "dots_saveable", images) < none


def test_residuals_grow_with_images_and_depth_as_traced():
    spec, _ = _parse("gin/cpu/vit.gin")
    one = residual_memory.residuals(spec, 1, remat="none")
    three = residual_memory.residuals(spec, 3, remat="none")
    (block_one,), (block_three,) = one.blocks, three.blocks
    assert block_one.count == spec.vit.num_layers
    assert block_three.per_block > block_one.per_block
    # The linear fit in images reproduces a trace at 3 images exactly.
    deeper = dataclasses.replace(spec, vit=dataclasses.replace(spec.vit, num_layers=1))
    traced = residual_memory.traced_bytes(
        residual_memory._at_depth(deeper, "none", 1), 3, "float32", "softmax", (1, 1)
    )
    assert three.fixed + block_three.per_block == traced


def test_model_axis_splits_the_weight_copies_and_wide_activations():
    spec, _ = _parse("gin/vit_b16.gin")
    alone = residual_memory.residuals(spec, 2, "bfloat16", axes=(1, 1), remat="none")
    split = residual_memory.residuals(spec, 2, "bfloat16", axes=(1, 4), remat="none")
    assert split.blocks[0].per_block < alone.blocks[0].per_block


def _data_parallel(spec: ModelSpec) -> program_plan.Setting:
    return program_plan.Setting((256, 1, 1), spec.vit.remat)


@pytest.mark.slow
def test_widenet_h_fits_256_tpuv3_cores_and_its_unshared_variant_does_not():
    """Xue et al. 2022: WideNet-H trained on 256 TPUv3 cores at batch 4096; without parameter
    sharing it ran out of memory there. Data-parallel over the 256 cores, as the gin files run
    it (the paper does not state a mesh)."""
    shared, train = _parse("gin/widenet_h.gin")
    unshared, _ = _parse("gin/ablations/widenet_h_unshared.gin")
    assert unshared.family == "vmoe" and unshared.moe_layers == list(range(32))
    assert (unshared.moe.num_experts, unshared.moe.capacity_factor) == (4, 1.2)
    fits = program_plan.plan(shared, _data_parallel(shared), 4096, train.compute_dtype, train.loss)
    fails = program_plan.plan(
        unshared, _data_parallel(unshared), 4096, train.compute_dtype, train.loss
    )
    assert fits.per_device_batch == 16
    assert fits.fits(TPU_V3.memory_bytes) and not fails.fits(TPU_V3.memory_bytes)
    assert fails.verdict(TPU_V3.memory_bytes) == program_plan.DOES_NOT_FIT
    # The 32 blocks' own weights, with their gradients and Adam moments, alone do not fit.
    held = sum(fails.term(t) for t in ("params", "gradients", "optimizer"))
    assert held > TPU_V3.memory_bytes > 4 * fits.term("params")
    assert fails.term("params") > 25 * fits.term("params")


def test_verdict_is_certain_only_from_the_exact_terms():
    """The activation terms are upper bounds (1.4-1.8x XLA's on an H200): a total over the
    memory is 'does not fit' only when the exact terms alone are over it."""
    terms = (
        ("params", 6, program_plan.EXACT),
        ("residuals", 8, program_plan.UPPER_BOUND),
        ("recompute", 2, program_plan.ESTIMATE),
    )
    plan = program_plan.ProgramPlan(program_plan.Setting((1, 1, 1), "none"), 1, 1, terms)
    assert (plan.total, plan.exact_total) == (16, 6)
    assert plan.verdict(16) == program_plan.FITS
    assert plan.verdict(15) == plan.verdict(6) == program_plan.MAY_NOT_FIT
    assert plan.verdict(5) == program_plan.DOES_NOT_FIT


def test_all_to_all_buffers_follow_capacity():
    spec, _ = _parse("gin/vmoe_h14.gin")
    tokens = 257  # (224 / 14)^2 + the class token
    capacity = math.ceil(2 * 8 * tokens * 1.05 / 32)
    expected = 2 * (16 // 8) * 32 * capacity * 1280 * 2
    assert program_plan.all_to_all_bytes(spec, 16, 32, "bfloat16") == expected
    assert program_plan.all_to_all_bytes(spec, 16, 1, "bfloat16") == 0


def test_step_time_counts_recompute_and_the_model_axis():
    spec, _ = _parse("gin/vit_b16.gin")
    plain = program_plan.Setting((256, 1, 1), "none")
    step = step_cost.step_time(spec, plain, 4096, TPU_V3)
    full = step_cost.step_time(spec, dataclasses.replace(plain, remat="full"), 4096, TPU_V3)
    assert full.compute_s == pytest.approx(step.compute_s * 4 / 3)
    split = step_cost.step_time(spec, program_plan.Setting((128, 1, 2), "none"), 4096, TPU_V3)
    assert split.compute_s == pytest.approx(step.compute_s)  # twice the images, half each
    assert split.collective_bytes > step.collective_bytes  # the model axis' all-reduces
    run = paper_costs.paper_run("vit_b16")
    cost = step_cost.run_cost(spec, plain, run.global_batch, run.steps, TPU_V3)
    assert cost.accelerator_days == pytest.approx(step.total_s * run.steps * 256 / 86_400)
    assert cost.kwh == pytest.approx(step.total_s * run.steps / 3600 * 128 * 283 * 1.1 / 1000)


@pytest.mark.slow
def test_recommendation_rematerialises_only_when_memory_needs_it():
    spec, _ = _parse("gin/cpu/vit.gin")
    # recommend() plans in bfloat16 by default, like the paper configs.
    none = program_plan.plan(spec, program_plan.Setting((1, 1, 1), "none"), 64, "bfloat16")
    full = program_plan.plan(spec, program_plan.Setting((1, 1, 1), "full"), 64, "bfloat16")
    roomy = dataclasses.replace(TPU_V3, memory_bytes=none.total)
    tight = dataclasses.replace(TPU_V3, memory_bytes=(none.total + full.total) // 2)
    assert recommend.recommend(spec, roomy, 1, 64).plan.setting.remat != "full"
    chosen = recommend.recommend(spec, tight, 1, 64).plan
    assert chosen.setting.remat != "none" or chosen.setting.microbatches > 1
    assert chosen.total <= tight.memory_bytes
    nothing = recommend.recommend(spec, dataclasses.replace(TPU_V3, memory_bytes=1), 1, 64)
    assert nothing.plan is None and nothing.smallest.total > 1
    with pytest.raises(ValueError, match="--devices=3"):
        recommend.recommend(spec, roomy, 3, 64)


def test_unknown_device_is_one_line():
    with pytest.raises(UsageError, match=r"--device=h100 is unknown; use one of .*h100-80gb"):
        try:
            inspect.flags.FLAGS.unparse_flags()
            inspect.flags.FLAGS(
                ["inspect", "--gin_file=gin/cpu/vit.gin", "--plan", "--device=h100"]
            )
            inspect.main([])
        finally:
            gin.clear_config()


def test_plan_of_the_gin_files_setting_as_json(capsys):
    flags = inspect.flags.FLAGS
    flags.unparse_flags()
    args = ["--gin_file=gin/cpu/vit.gin", "--plan", "--mesh=2,1,1", "--batch=8", "--json"]
    flags(["inspect", *args, "--device=a100-40gb"])
    try:
        inspect.main([])
    finally:
        gin.clear_config()
    record = json.loads(capsys.readouterr().out)
    terms = {name: term["bytes"] for name, term in record["terms"].items()}
    assert record["setting"]["mesh"] == [2, 1, 1] and record["per_device_batch"] == 4
    assert terms["optimizer"] == 2 * terms["params"] == 2 * terms["gradients"]
    assert record["total"] == sum(terms.values()) and record["fits"] is True
    assert record["terms"]["params"]["method"] == "exact"
