"""Closed-form parameter counts of each family, written from the papers' architecture
descriptions independently of the praxis code, to check what the builders produce."""

from models.specs import ModelSpec


def _embedding(spec: ModelSpec) -> int:
    v = spec.vit
    patches = (v.image_size // v.patch_size) ** 2
    d = v.model_dims
    patch_projection = v.patch_size**2 * v.num_channels * d + d
    if spec.pooling == "token":
        return patch_projection + d + (patches + 1) * d  # class token + (N+1) positions
    return patch_projection + patches * d


def _attention(d: int, bias: bool = True) -> int:
    return 4 * d * d + (4 * d if bias else 0)


def _mlp(d: int, m: int) -> int:
    return 2 * d * m + m + d


def _experts(spec: ModelSpec, d: int, m: int) -> int:
    e = spec.moe.num_experts
    if spec.moe.router == "soft":
        # Soft MoE: one d-vector per slot (Phi [d, E, p]) and one learned scalar scale.
        return d * e * spec.moe.slots_per_expert + 1 + e * _mlp(d, m)
    return d * e + e * _mlp(d, m)  # bias-free router + E MLPs


def _head(spec: ModelSpec) -> int:
    d, k = spec.vit.model_dims, spec.vit.num_classes
    return d * k + k + ((d * d + d) if spec.vit.pre_logits else 0)


def body_params(spec: ModelSpec) -> int:
    v = spec.vit
    d, m = v.model_dims, v.mlp_dims
    m_expert = spec.moe.expert_mlp_dims or m
    layer_norm = 2 * d
    total = _embedding(spec)
    if spec.family == "widenet":
        total += _attention(d) + _experts(spec, d, m_expert)
        total += v.num_layers * 2 * layer_norm
    elif spec.family == "vit22b":
        b = spec.vit22b
        assert b.parallel and b.fused and not b.use_bias and b.qk_norm, "formula for ViT-22B"
        head_dim = d // v.num_heads
        per_block = d * (3 * d + m) + m  # fused QKV+MLP-in; only the MLP part has a bias
        per_block += (d + m) * d + d  # fused attention-out+MLP-out; MLP-out bias
        per_block += d + 2 * head_dim  # bias-free LayerNorm, QK-norm scales
        total += v.num_layers * per_block
    else:
        moe_layers = set(spec.moe_layers)
        for i in range(v.num_layers):
            ffn = _experts(spec, d, m_expert) if i in moe_layers else _mlp(d, m)
            total += _attention(d) + ffn + 2 * layer_norm
    final_norm = d if spec.family == "vit22b" else layer_norm
    return total + final_norm


def total_params(spec: ModelSpec) -> int:
    return body_params(spec) + _head(spec)
