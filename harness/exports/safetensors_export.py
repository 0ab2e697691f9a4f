"""The safetensors export: timm's VisionTransformer state dict (harness/exports/timm_layout.py)
with metadata saying how to build the model that takes it.

Metadata (safetensors `__metadata__`, every value a string):
  format       'timm_vit' (dense) or 'timm_vit_moe' (V-MoE blocks as timm_layout names them)
  timm_kwargs  JSON keyword arguments of timm.models.vision_transformer.VisionTransformer
               that give a model this state dict loads into with strict=True (for a V-MoE,
               everything but the MoE blocks' `mlp`). fc_norm=False keeps the final norm
               before pooling, as ours is; act_layer 'gelu_tanh' is praxis's GELU.
  moe          (V-MoE only) JSON: the MoE block indices, E, k, C, the router and how its
               gates combine the experts, so a port can route as the trained model did.
  step         the checkpoint step exported.
"""

import json

from harness.checkpoint_formats import safetensors_file
from harness.exports import flax_layout, timm_layout
from harness.exports.run_weights import RunWeights
from models.specs import ModelSpec

DENSE_FORMAT = "timm_vit"
MOE_FORMAT = "timm_vit_moe"
# How each router turns its scores into combine weights (docs/DESIGN.md, "Models").
GATES = {
    "top_k": (
        "scores softmax(x @ router.weight.T) over experts; each token goes to its top-k "
        "experts, whose outputs are summed weighted by those scores (not renormalised); a "
        "token past an expert's capacity ceil(k * group_tokens * C / E) skips it"
    ),
    "expert_choice": (
        "scores softmax(x @ router.weight.T) over experts; expert e takes the "
        "ceil(k * group_tokens * C / E) tokens of its group with the highest score for e, "
        "and a token's output sums the outputs of the experts that took it, weighted by "
        "those scores"
    ),
}


def timm_kwargs(spec: ModelSpec) -> dict[str, object]:
    vit = spec.vit
    token = spec.pooling == "token"
    return {
        "img_size": vit.image_size,
        "patch_size": vit.patch_size,
        "in_chans": vit.num_channels,
        "num_classes": vit.num_classes,
        "embed_dim": vit.model_dims,
        "depth": vit.num_layers,
        "num_heads": vit.num_heads,
        "mlp_ratio": vit.mlp_dims / vit.model_dims,
        "qkv_bias": True,
        "class_token": token,
        "global_pool": "token" if token else "avg",
        "fc_norm": False,
        "act_layer": "gelu_tanh",
    }


def moe_metadata(spec: ModelSpec) -> dict[str, object]:
    moe = spec.moe
    return {
        "blocks": spec.moe_layers,
        "num_experts": moe.num_experts,
        "num_selected_experts": moe.num_selected_experts,
        "capacity_factor": moe.capacity_factor,
        "eval_num_selected_experts": moe.eval_num_selected_experts or moe.num_selected_experts,
        "eval_capacity_factor": moe.eval_capacity_factor or moe.capacity_factor,
        "batch_priority": moe.batch_priority,
        "group_images": moe.group_images,
        "router": moe.router,
        "expert_mlp_dims": moe.expert_mlp_dims or spec.vit.mlp_dims,
        "gates": GATES[moe.router],
    }


def encode(weights: RunWeights) -> bytes:
    spec = weights.spec
    flax = flax_layout.to_flax(
        weights.params,
        flax_layout.VISION_TRANSFORMER,
        patch_size=spec.vit.patch_size,
        channels=spec.vit.num_channels,
    )
    metadata = {
        "format": MOE_FORMAT if spec.moe_layers else DENSE_FORMAT,
        "timm_kwargs": json.dumps(timm_kwargs(spec)),
        "step": str(weights.step),
    }
    if spec.moe_layers:
        metadata["moe"] = json.dumps(moe_metadata(spec))
    return safetensors_file.encode(timm_layout.to_timm(flax), metadata)
