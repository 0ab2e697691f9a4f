"""Gin-configurable specs and the one function that turns them into a praxis model config.

A gin file sets `ModelSpec.family` and fields of VitSpec (the transformer shape), MoeSpec
(routing) and Vit22bSpec (block switches); `build_model(ModelSpec())` returns a pax_fiddle
config of VisionTransformerClassifier. Families:
  vit     dense ViT: praxis StackedTransformer of pre-LN Transformer layers.
  vmoe    V-MoE: the same stack with models.moe.MoeFeedForward in the blocks MoeSpec.placement
          names ('every_2' = blocks 1, 3, 5, ...; 'last_5' = the last 5 odd blocks).
  widenet WideNet: models.widenet.WideNetEncoder (shared attention and MoE in every block).
  vit22b  ViT-22B-style blocks (models.blocks.Vit22bBlock) with global average pooling.
"""

import dataclasses
from collections.abc import Sequence

import gin
import jax.numpy as jnp
from praxis import pax_fiddle
from praxis.layers import activations, transformers

from models import blocks, moe, vit, widenet
from models.spec import Spec

FAMILIES = ("vit", "vmoe", "widenet", "vit22b")
MESH_AXES = ("data", "expert", "model")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class VitSpec(Spec):
    """Shape of the transformer and its input/output."""

    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    num_classes: int = 1000
    model_dims: int = 768
    num_layers: int = 12
    mlp_dims: int = 3072
    num_heads: int = 12
    pooling: str = "token"
    pre_logits: bool = False
    dropout_prob: float = 0.0


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MoeSpec(Spec):
    """Routing and expert settings (V-MoE and WideNet). eval_* = None means 'as in training'."""

    num_experts: int = 32
    num_selected_experts: int = 2
    capacity_factor: float = 1.05
    eval_num_selected_experts: int | None = None
    eval_capacity_factor: float | None = None
    batch_priority: bool = False
    eval_batch_priority: bool | None = None
    group_size: int = 0
    placement: str = "every_2"
    expert_mlp_dims: int | None = None
    aux_loss: str = "vmoe"
    noise_std: float | None = None
    dispatch: str = "gather"

    @property
    def inference_k(self) -> int:
        return self.eval_num_selected_experts or self.num_selected_experts


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Vit22bSpec(Spec):
    """ViT-22B block switches, one ablation each."""

    parallel: bool = True
    qk_norm: bool = True
    use_bias: bool = False
    fused: bool = True


def moe_layer_indices(placement: str, num_layers: int) -> list[int]:
    """Blocks that get an MoE: 'every_n' = every n-th block counting from block n-1
    (every_2 -> 1, 3, 5, ...), 'last_n' = the last n odd-indexed blocks (V-MoE "Last-n")."""
    kind, _, count = placement.partition("_")
    if kind not in ("every", "last") or not count.isdigit() or int(count) < 1:
        raise ValueError(
            f"MoeSpec.placement={placement!r} is not understood; use 'every_N' or 'last_N' "
            "with N >= 1, e.g. 'every_2' or 'last_5'"
        )
    n = int(count)
    if kind == "every":
        return list(range(n - 1, num_layers, n))
    odd = list(range(1, num_layers, 2))
    if n > len(odd):
        raise ValueError(
            f"MoeSpec.placement={placement!r} asks for {n} MoE blocks but only {len(odd)} of "
            f"{num_layers} blocks are odd-indexed; use last_N with N <= {len(odd)}"
        )
    return odd[-n:]


def _sparse_moe(spec: MoeSpec) -> pax_fiddle.Config:
    return pax_fiddle.Config(
        moe.SparseMoe,
        num_selected_experts=spec.num_selected_experts,
        capacity_factor=spec.capacity_factor,
        eval_num_selected_experts=spec.eval_num_selected_experts,
        eval_capacity_factor=spec.eval_capacity_factor,
        batch_priority=spec.batch_priority,
        eval_batch_priority=spec.eval_batch_priority,
        group_size=spec.group_size,
        noise_std=spec.noise_std,
        aux_loss=spec.aux_loss,
        dispatch=spec.dispatch,
    )


def _dense_block() -> pax_fiddle.Config:
    """A ViT pre-LN block from praxis, with ViT's GELU and plain 1/sqrt(d) attention scaling."""
    block = pax_fiddle.Config(transformers.Transformer)
    block.tr_atten_tpl.internal_enable_per_dim_scale = False
    # Heads over 'model' (Megatron-style), and the MLP hidden dimension with them.
    block.tr_atten_tpl.weight_split_dims_mapping.proj = [None, "model", None]
    block.tr_fflayer_tpl.activation_tpl = pax_fiddle.Config(activations.GELU)
    block.tr_fflayer_tpl.weight_split_dims_mapping.ffn0 = [None, "model"]
    block.tr_fflayer_tpl.weight_split_dims_mapping.ffn1 = ["model", None]
    return block


def _stack(spec: VitSpec, block: pax_fiddle.Config) -> pax_fiddle.Config:
    return pax_fiddle.Config(
        transformers.StackedTransformer,
        num_layers=spec.num_layers,
        model_dims=spec.model_dims,
        hidden_dims=spec.mlp_dims,
        num_heads=spec.num_heads,
        dropout_prob=spec.dropout_prob,
        mask_self_attention=False,
        packed_input=False,
        use_cross_attention=False,
        transformer_layer_params_tpl=block,
    )


def _encoder(family: str, spec: VitSpec, moe_spec: MoeSpec, block_spec: Vit22bSpec):
    if family == "vit":
        return _stack(spec, _dense_block())
    if family == "vit22b":
        block = pax_fiddle.Config(blocks.Vit22bBlock, **dataclasses.asdict(block_spec))
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
        )
    stack = _stack(spec, _dense_block())
    stack.moe_layers = moe_layer_indices(moe_spec.placement, spec.num_layers)
    stack.num_experts = moe_spec.num_experts
    stack.moe_layer_tpl = pax_fiddle.Config(
        moe.MoeFeedForward,
        hidden_dims=expert_dims,
        moe_tpl=_sparse_moe(moe_spec),
    )
    return stack


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ModelSpec(Spec):
    """Everything that defines a model: gin sets `ModelSpec.family` and the sub-specs' fields."""

    family: str = "vit"
    vit: VitSpec = dataclasses.field(default_factory=VitSpec)
    moe: MoeSpec = dataclasses.field(default_factory=MoeSpec)
    vit22b: Vit22bSpec = dataclasses.field(default_factory=Vit22bSpec)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.family not in FAMILIES:
            raise ValueError(f"ModelSpec.family={self.family!r} is unknown; use one of {FAMILIES}")
        if self.vit.model_dims % self.vit.num_heads:
            raise ValueError(
                f"VitSpec.model_dims={self.vit.model_dims} is not divisible by num_heads="
                f"{self.vit.num_heads}; pick a head count that divides the width"
            )

    @property
    def is_sparse(self) -> bool:
        return self.family in ("vmoe", "widenet")

    @property
    def pooling(self) -> str:
        return "gap" if self.family == "vit22b" else self.vit.pooling

    @property
    def moe_layers(self) -> list[int]:
        """Indices of the blocks that route through an MoE (WideNet: every block)."""
        if self.family == "vmoe":
            return moe_layer_indices(self.moe.placement, self.vit.num_layers)
        if self.family == "widenet":
            return list(range(self.vit.num_layers))
        return []


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
        encoder_tpl=_encoder(spec.family, spec.vit, spec.moe, block_spec),
        mesh_axis_names=MESH_AXES,
        ici_mesh_shape=list(mesh_shape) if mesh_shape is not None else None,
        fprop_dtype=jnp.dtype(compute_dtype),
    )
