"""WideNet encoder (Xue et al. 2022): go wider instead of deeper.

One attention layer and one MoE layer (router and experts) are shared by every block; each
block keeps its own two LayerNorms, which is what lets the shared weights see differently
normalised inputs at each depth. praxis's `shared_weight_layer_id` cannot express this for
the MoE: sharing praxis's MoE feed-forward layer would share its inner LayerNorm too.
"""

from flax import linen as nn
from praxis import base_layer, pax_fiddle
from praxis.layers import attentions, checkpoint_policy

from models.layer_norm import LayerNorm
from models.moe import layers as moe

JTensor = base_layer.JTensor
LayerTpl = pax_fiddle.Config[base_layer.BaseLayer]
template_field = base_layer.template_field


class WideNetEncoder(base_layer.BaseLayer):
    """num_layers pre-LN blocks: x += Attn(LN_a[i](x)); x += MoE(LN_m[i](x)), weights shared.

    Attributes:
      num_layers: Number of blocks T (the shared MoE is routed T times per forward pass).
      model_dims: Token width D.
      hidden_dims: Expert MLP width.
      num_heads: Attention heads.
      num_experts: Experts in the shared MoE.
      attention_tpl: The shared attention layer.
      moe_tpl: The shared models.moe.layers.SparseMoe (routing settings live there).
      ln_tpl: Template of the 2 * num_layers per-block LayerNorms.
      remat_policy: None keeps every activation for the backward pass; else each block is
        rematerialised, keeping what the policy names.
    """

    num_layers: int = 12
    model_dims: int = 768
    hidden_dims: int = 4096
    num_heads: int = 12
    num_experts: int = 4
    attention_tpl: LayerTpl = template_field(attentions.DotProductAttention)
    moe_tpl: LayerTpl = template_field(moe.SparseMoe)
    ln_tpl: LayerTpl = template_field(LayerNorm)
    remat_policy: checkpoint_policy.AutodiffCheckpointType | None = None

    def setup(self) -> None:
        self.create_child(
            "attention",
            self.attention_tpl.clone().set(
                input_dim=self.model_dims,
                hidden_dim=self.model_dims,
                num_heads=self.num_heads,
                dim_per_head=self.model_dims // self.num_heads,
                # Plain 1/sqrt(d) scaling, as in ViT; praxis's learned per-dim scale is not.
                internal_enable_per_dim_scale=False,
            ),
        )
        self.create_child(
            "moe",
            self.moe_tpl.clone().set(
                input_dims=self.model_dims,
                hidden_dims=self.hidden_dims,
                num_experts=self.num_experts,
            ),
        )
        norm = self.ln_tpl.clone().set(dim=self.model_dims)
        self.create_children("attention_norms", [norm.clone() for _ in range(self.num_layers)])
        self.create_children("moe_norms", [norm.clone() for _ in range(self.num_layers)])

    def __call__(self, inputs: JTensor, paddings: JTensor) -> JTensor:
        """Applies the shared blocks to tokens [B, T, D] with paddings [B, T]."""
        mask = attentions.convert_paddings_to_mask(paddings, inputs.dtype)

        def block(encoder: "WideNetEncoder", x: JTensor, mask: JTensor, i: int) -> JTensor:
            normed = encoder.attention_norms[i](x)
            attended, _ = encoder.attention(normed, normed, normed, atten_mask=mask)
            x = x + attended
            return x + encoder.moe(encoder.moe_norms[i](x))

        if self.remat_policy is not None:
            policy = checkpoint_policy.custom_policy(self.remat_policy)
            block = nn.remat(block, policy=policy, static_argnums=(3,))
        x = inputs
        for i in range(self.num_layers):
            x = block(self, x, mask, i)
        return x
