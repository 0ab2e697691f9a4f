"""The one function that turns a ModelSpec (models/specs.py) into a praxis model config.

`build_model(ModelSpec())` returns a pax_fiddle config of VisionTransformerClassifier. Families:
  vit     dense ViT: praxis StackedTransformer of pre-LN Transformer layers.
  vmoe    V-MoE: the same stack with models.moe.layers.MoeFeedForward in the blocks
          MoeSpec.placement names ('every_2' = blocks 1, 3, 5, ...; 'last_5' = the last 5 odd
          blocks).
  widenet WideNet: models.widenet.WideNetEncoder (shared attention and MoE in every block).
  vit22b  ViT-22B-style blocks (models.vit22b.Vit22bBlock) with global average pooling.
"""

import dataclasses
from collections.abc import Sequence

import jax.numpy as jnp
from praxis import pax_fiddle
from praxis.layers import activations, repeats, transformers
from praxis.layers.checkpoint_policy import AutodiffCheckpointType

from models import segmented_stack, vit, vit22b, widenet
from models.layer_norm import LayerNorm
from models.moe import layers as moe
from models.specs import MESH_AXES, ModelSpec, MoeSpec, Vit22bSpec, VitSpec, moe_layer_indices
from models.stats import STATS

# VitSpec.remat -> what the backward pass keeps of a block (the rest is recomputed).
CHECKPOINT_POLICIES = {
    "none": AutodiffCheckpointType.SAVE_EVERYTHING,
    "full": AutodiffCheckpointType.SAVE_NOTHING,
    "dots_saveable": AutodiffCheckpointType.SAVE_DOT_ONLY,
}
# praxis's scan carries the collections it lists along the depth axis; our layers also sow
# STATS (routing, attention logits), which flax would otherwise refuse to mutate inside the
# scan. Each sown value then gains a leading axis: one entry per repeat of the block.
repeats.SCAN_VARIABLE_AXES.setdefault(STATS, 0)


def _sparse_moe(spec: MoeSpec) -> pax_fiddle.Config:
    return pax_fiddle.Config(moe.SparseMoe, spec=spec)


def _dense_block() -> pax_fiddle.Config:
    """A ViT pre-LN block from praxis, with ViT's GELU and plain 1/sqrt(d) attention scaling."""
    block = pax_fiddle.Config(transformers.Transformer)
    block.tr_atten_tpl.internal_enable_per_dim_scale = False
    # flax's LayerNorm statistics, which XLA:CPU runs as one oneDNN call (models/layer_norm.py).
    block.ln_tpl = pax_fiddle.Config(LayerNorm)
    block.tr_fflayer_tpl.ln_tpl = pax_fiddle.Config(LayerNorm)
    # Heads over 'model' (Megatron-style), and the MLP hidden dimension with them.
    block.tr_atten_tpl.weight_split_dims_mapping.proj = [None, "model", None]
    block.tr_fflayer_tpl.activation_tpl = pax_fiddle.Config(activations.GELU)
    block.tr_fflayer_tpl.weight_split_dims_mapping.ffn0 = [None, "model"]
    block.tr_fflayer_tpl.weight_split_dims_mapping.ffn1 = ["model", None]
    return block


def _stack(
    spec: VitSpec,
    block: pax_fiddle.Config,
    moe_layers: list[int] | None = None,
    moe_tpl: pax_fiddle.Config | None = None,
) -> pax_fiddle.Config:
    """The encoder stack: plain, with each block rematerialised, or scanned.

    Scanning compiles each repeating pattern of blocks once (`scan_segments`): one block for a
    dense stack, the dense+MoE pair for V-MoE Every-2, and for Last-n a dense prefix and a
    dense+MoE suffix as two consecutive scans (models/segmented_stack.py).
    """
    moe_layers = moe_layers or []
    if not spec.scan_layers:
        layers = _layers(spec, block, spec.num_layers, moe_layers, moe_tpl)
        layers.remat = spec.remat != "none"
        layers.checkpoint_policy = CHECKPOINT_POLICIES[spec.remat]
        return layers
    scans = []
    for first, count in scan_segments(spec.num_layers, moe_layers):
        inside = [i - first for i in moe_layers if first <= i < first + count]
        period = _period(count, inside)
        scans.append(
            pax_fiddle.Config(
                transformers.StackedTransformerRepeated,
                block=_layers(spec, block, period, [i for i in inside if i < period], moe_tpl),
                x_times=count // period,
                # praxis's scan always rematerialises; SAVE_EVERYTHING is remat='none'.
                checkpoint_policy=CHECKPOINT_POLICIES[spec.remat],
            )
        )
    if len(scans) == 1:  # keeps the 'encoder/repeat/...' layout of earlier checkpoints
        return scans[0]
    return pax_fiddle.Config(segmented_stack.SegmentedStack, segments=scans)


def scan_segments(num_layers: int, moe_layers: list[int]) -> list[tuple[int, int]]:
    """(first block, block count) of each scan of the stack.

    One scan when the whole stack repeats a short pattern; otherwise a dense prefix and a
    suffix that repeats, split where the fewest distinct blocks are compiled (V-MoE-H/14
    Last-5: 22 dense blocks, then 5 dense+MoE pairs: 3 blocks instead of 32).
    """
    best, cost = [(0, num_layers)], _period(num_layers, moe_layers)
    for first in range(1, min(moe_layers, default=num_layers) + 1):
        if first >= num_layers:
            break
        split_cost = 1 + _period(num_layers - first, [i - first for i in moe_layers])
        if split_cost < cost:
            best, cost = [(0, first), (first, num_layers - first)], split_cost
    return best


def _period(num_layers: int, moe_layers: list[int]) -> int:
    """The smallest n such that the stack is one n-block pattern repeated."""
    for n in range(1, num_layers + 1):
        pattern = [i % n for i in moe_layers]
        if num_layers % n == 0 and moe_layers == [i for i in range(num_layers) if i % n in pattern]:
            return n
    return num_layers


def _layers(
    spec: VitSpec,
    block: pax_fiddle.Config,
    num_layers: int,
    moe_layers: list[int],
    moe_tpl: pax_fiddle.Config | None,
) -> pax_fiddle.Config:
    layers = pax_fiddle.Config(
        transformers.StackedTransformer,
        num_layers=num_layers,
        model_dims=spec.model_dims,
        hidden_dims=spec.mlp_dims,
        num_heads=spec.num_heads,
        dropout_prob=spec.dropout_prob,
        mask_self_attention=False,
        packed_input=False,
        use_cross_attention=False,
        transformer_layer_params_tpl=block,
        moe_layers=moe_layers,
    )
    if moe_layers and moe_tpl is not None:
        layers.num_experts = moe_tpl.moe_tpl.spec.num_experts
        layers.moe_layer_tpl = moe_tpl
    return layers


def _encoder(family: str, spec: VitSpec, moe_spec: MoeSpec, block_spec: Vit22bSpec):
    if family == "vit":
        return _stack(spec, _dense_block())
    if family == "vit22b":
        block = pax_fiddle.Config(vit22b.Vit22bBlock, **dataclasses.asdict(block_spec))
        return _stack(spec, block)
    expert_dims = moe_spec.expert_mlp_dims or spec.mlp_dims
    if family == "widenet":
        attention = _dense_block().tr_atten_tpl
        return pax_fiddle.Config(
            widenet.WideNetEncoder,
            num_layers=spec.num_layers,
            model_dims=spec.model_dims,
            hidden_dims=expert_dims,
            num_heads=spec.num_heads,
            num_experts=moe_spec.num_experts,
            attention_tpl=attention,
            moe_tpl=_sparse_moe(moe_spec),
            remat_policy=None if spec.remat == "none" else CHECKPOINT_POLICIES[spec.remat],
            scan_layers=spec.scan_layers,
        )
    moe_tpl = pax_fiddle.Config(
        moe.MoeFeedForward, hidden_dims=expert_dims, moe_tpl=_sparse_moe(moe_spec)
    )
    moe_layers = moe_layer_indices(moe_spec.placement, spec.num_layers)
    return _stack(spec, _dense_block(), moe_layers, moe_tpl)


def build_model(
    spec: ModelSpec,
    mesh_shape: Sequence[int] | None = None,
    compute_dtype: str = "float32",
) -> pax_fiddle.Config:
    """Returns the pax_fiddle config of the classifier `spec` describes.

    Args:
      spec: The model; ModelSpec() reads it from gin.
      mesh_shape: Sizes of the ('data', 'expert', 'model') mesh, or None when the model is
        only inspected; weights carry their split dims either way.
      compute_dtype: 'float32' or 'bfloat16' (activations only; weights stay float32).
    """
    block_spec = spec.vit22b
    return pax_fiddle.Config(
        vit.VisionTransformerClassifier,
        name="model",
        image_size=spec.vit.image_size,
        patch_size=spec.vit.patch_size,
        num_channels=spec.vit.num_channels,
        model_dims=spec.vit.model_dims,
        num_classes=spec.vit.num_classes,
        pooling=spec.pooling,
        pre_logits=spec.vit.pre_logits,
        use_final_norm_bias=not (spec.family == "vit22b" and not block_spec.use_bias),
        final_norm_centered=not (spec.family == "vit22b" and not block_spec.norm_centered),
        encoder_tpl=_encoder(spec.family, spec.vit, spec.moe, block_spec),
        mesh_axis_names=MESH_AXES,
        ici_mesh_shape=list(mesh_shape) if mesh_shape is not None else None,
        fprop_dtype=jnp.dtype(compute_dtype),
    )
