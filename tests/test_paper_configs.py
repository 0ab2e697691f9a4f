"""The paper gin files build the published architectures, checked by parameter count."""

import glob
import math
import os

import gin
import pytest

from harness import gin_config as config
from harness import inspect
from harness.measure import params_flops as measure
from models import builders, specs
from tests import param_formulas

PAPER_GIN_FILES = config.PAPER_CONFIGS

# Exact counts of the reference ViT implementation with a 1000-class head and no
# pre-logits layer (the original ViT checkpoints' fine-tuned ImageNet heads).
REFERENCE_VIT_PARAMS = {
    "vit_b16": 86_567_656,
    "vit_l16": 304_326_632,
    "vit_h14": 632_045_800,
}


def _spec(name: str) -> specs.ModelSpec:
    config.parse_gin([f"gin/{name}.gin"], [])
    return specs.ModelSpec()


@pytest.fixture(autouse=True)
def _clear_gin():
    yield
    gin.clear_config()


def test_every_paper_gin_file_is_listed():
    on_disk = {os.path.basename(p)[:-4] for p in glob.glob(f"{config.REPO_ROOT}/gin/*.gin")}
    assert on_disk == set(PAPER_GIN_FILES)


@pytest.mark.parametrize("name", PAPER_GIN_FILES)
def test_paper_config_parameter_counts_match_the_architecture(name):
    spec = _spec(name)
    record = inspect.inspect_model(spec, [1, 1, 1], xla_flops=False)
    assert record["params_body"] == param_formulas.body_params(spec)
    assert record["params_total"] == param_formulas.total_params(spec)
    if name in REFERENCE_VIT_PARAMS:
        assert record["params_total"] == REFERENCE_VIT_PARAMS[name]
    if spec.is_sparse:
        expert_share = 1 - spec.moe.num_selected_experts / spec.moe.num_experts
        assert record["params_active"] < record["params_total"] * (1 - 0.5 * expert_share)
    else:
        assert record["params_active"] == record["params_total"]


def test_vmoe_placements():
    assert specs.moe_layer_indices("every_2", 8) == [1, 3, 5, 7]
    assert specs.moe_layer_indices("last_5", 32) == [23, 25, 27, 29, 31]
    assert specs.moe_layer_indices("every_1", 3) == [0, 1, 2]
    with pytest.raises(ValueError, match="placement='last_9'"):
        specs.moe_layer_indices("last_9", 12)
    with pytest.raises(ValueError, match="every_N"):
        specs.moe_layer_indices("sometimes", 12)


def test_analytic_flops_of_vit_b16_by_hand():
    spec = _spec("vit_b16")
    tokens, d, m = 197, 768, 3072
    macs = 196 * 16 * 16 * 3 * d + 12 * (4 * tokens * d * d + 2 * tokens**2 * d)
    macs += 12 * 2 * tokens * d * m + d * 1000
    assert measure.analytic_gflops_per_image(spec) == pytest.approx(2 * macs / 1e9)


def test_sparse_flops_count_k_experts_not_e():
    dense = _spec("vit_b16")
    sparse = _spec("vmoe_b16")
    tokens, d, m, e, k = 197, 768, 3072, 32, 2
    extra_per_moe_layer = 2 * ((k - 1) * 2 * tokens * d * m + tokens * d * e) / 1e9
    assert measure.analytic_gflops_per_image(sparse) == pytest.approx(
        measure.analytic_gflops_per_image(dense) + 6 * extra_per_moe_layer
    )


def test_param_bytes_per_device_split_experts_over_the_expert_axis():
    spec = _spec("vmoe_s32")
    variables = measure.abstract_variables(builders.build_model(spec), spec)
    whole = measure.param_bytes_per_device(variables, [1, 1, 1], specs.MESH_AXES)
    split = measure.param_bytes_per_device(variables, [1, 8, 1], specs.MESH_AXES)
    expert_bytes = 4 * sum(
        math.prod(w.shape)
        for _, w in measure.weights_with_paths(variables)
        if measure.is_expert_weight(w)
    )
    assert expert_bytes > whole / 2  # 4 MoE layers of 32 experts dominate V-MoE-S/32
    assert whole == 4 * param_formulas.total_params(spec)
    assert split == whole - expert_bytes + expert_bytes // 8
