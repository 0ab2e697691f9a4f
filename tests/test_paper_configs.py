"""The paper gin files build the published architectures, checked by parameter count."""

import glob
import math
import os

import gin
import pytest

from harness import project
from harness.config import gin_config
from harness.measure import model_summary, params_flops
from models import builders, specs
from tests import param_formulas

PAPER_GIN_FILES = project.PAPER_CONFIGS

# Exact counts of the reference ViT implementation with a 1000-class head and no
# pre-logits layer (the original ViT checkpoints' fine-tuned ImageNet heads).
REFERENCE_VIT_PARAMS = {
    "vit_b16": 86_567_656,
    "vit_l16": 304_326_632,
    "vit_h14": 632_045_800,
}


# Published totals with the 29,593-class JFT-4B head: Puigcerver et al. 2023, "From Sparse to
# Soft Mixtures of Experts", Table 1 (Soft MoE B/16 128E 3.7B, L/16 128E 13.1B), rounded there
# to 0.1B. (The same table's ViT B/16 108M and L/16 333M are the dense models with that head.)
JFT_CLASSES = 29_593
PUBLISHED_SOFT_MOE_PARAMS = {"softmoe_b16": 3.7e9, "softmoe_l16": 13.1e9}


def _spec(name: str, *bindings: str) -> specs.ModelSpec:
    gin_config.parse_gin([f"gin/{name}.gin"], list(bindings))
    return specs.ModelSpec()


@pytest.fixture(autouse=True)
def _clear_gin():
    yield
    gin.clear_config()


def test_every_paper_gin_file_is_listed():
    on_disk = {os.path.basename(p)[:-4] for p in glob.glob(f"{project.REPO_ROOT}/gin/*.gin")}
    assert on_disk == set(PAPER_GIN_FILES)


@pytest.mark.parametrize("name", PAPER_GIN_FILES)
def test_paper_config_parameter_counts_match_the_architecture(name):
    spec = _spec(name)
    record = model_summary.inspect_model(spec, [1, 1, 1], xla_flops=False)
    assert record["params_body"] == param_formulas.body_params(spec)
    assert record["params_total"] == param_formulas.total_params(spec)
    if name in REFERENCE_VIT_PARAMS:
        assert record["params_total"] == REFERENCE_VIT_PARAMS[name]
    if spec.is_sparse and spec.moe.router == "top_k":
        expert_share = 1 - spec.moe.num_selected_experts / spec.moe.num_experts
        assert record["params_active"] < record["params_total"] * (1 - 0.5 * expert_share)
    elif not spec.is_sparse:
        assert record["params_active"] == record["params_total"]


@pytest.mark.parametrize("name", sorted(PUBLISHED_SOFT_MOE_PARAMS))
def test_soft_moe_configs_match_the_published_parameter_counts(name):
    spec = _spec(name, f"VitSpec.num_classes={JFT_CLASSES}")
    assert spec.moe.router == "soft" and spec.moe.slots_per_expert == 1
    assert spec.moe.num_experts == 128
    assert spec.moe_layers == list(range(spec.vit.num_layers // 2, spec.vit.num_layers))
    total = param_formulas.total_params(spec)
    assert round(total / 1e8) * 1e8 == pytest.approx(PUBLISHED_SOFT_MOE_PARAMS[name])


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
    assert params_flops.analytic_gflops_per_image(spec) == pytest.approx(2 * macs / 1e9)


def test_sparse_flops_count_k_experts_not_e():
    dense = _spec("vit_b16")
    sparse = _spec("vmoe_b16")
    tokens, d, m, e, k = 197, 768, 3072, 32, 2
    extra_per_moe_layer = 2 * ((k - 1) * 2 * tokens * d * m + tokens * d * e) / 1e9
    assert params_flops.analytic_gflops_per_image(sparse) == pytest.approx(
        params_flops.analytic_gflops_per_image(dense) + 6 * extra_per_moe_layer
    )


def test_param_bytes_per_device_split_experts_over_the_expert_axis():
    spec = _spec("vmoe_s32")
    variables = params_flops.abstract_variables(builders.build_model(spec), spec)
    whole = params_flops.param_bytes_per_device(variables, [1, 1, 1], specs.MESH_AXES)
    split = params_flops.param_bytes_per_device(variables, [1, 8, 1], specs.MESH_AXES)
    expert_bytes = 4 * sum(
        math.prod(w.shape)
        for _, w in params_flops.weights_with_paths(variables)
        if params_flops.is_expert_weight(w)
    )
    assert expert_bytes > whole / 2  # 4 MoE layers of 32 experts dominate V-MoE-S/32
    assert whole == 4 * param_formulas.total_params(spec)
    assert split == whole - expert_bytes + expert_bytes // 8
