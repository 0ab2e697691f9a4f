"""WideNet encoder (Xue et al. 2022): go wider instead of deeper.

One attention layer and one MoE layer (router and experts) are shared by every block; each
block keeps its own two LayerNorms, which is what lets the shared weights see differently
normalised inputs at each depth. praxis's `shared_weight_layer_id` cannot express this for
the MoE: sharing praxis's MoE feed-forward layer would share its inner LayerNorm too.

With `scan_layers` the blocks are one `nn.scan` over the depth: the shared attention and MoE
are broadcast to every step (one copy, as unscanned), and the LayerNorms are stacked
[num_layers, D] weights whose row i is scanned into block i (models/scan_layout.py maps
them to and from 'attention_norms_i/...').
"""

import jax
import jax.numpy as jnp
from flax import linen as nn
from praxis import base_layer, pax_fiddle
from praxis.layers import attentions, checkpoint_policy

from models.layer_norm import LayerNorm
from models.moe import layers as moe
from models.stats import STATS

JTensor = base_layer.JTensor
LayerTpl = pax_fiddle.Config[base_layer.BaseLayer]
WeightHParams = base_layer.WeightHParams
template_field = base_layer.template_field


def layer_norm(x: JTensor, scale: JTensor, bias: JTensor, epsilon: float = 1e-6) -> JTensor:
    """praxis LayerNorm's maths (its defaults: scale applied as 1 + scale, then bias)."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + epsilon) * (1 + scale) + bias


class StackedLayerNorms(base_layer.BaseLayer):
    """num_layers LayerNorms' weights as [num_layers, dim] scale and bias, for a scan to
    slice; initialised as praxis LayerNorm (both zero: the scale is used as 1 + scale)."""

    num_layers: int = 0
    dim: int = 0

    def setup(self) -> None:
        mapping = [-1, -1] if self.mesh_shape is not None else None  # small: replicated
        for name in ("scale", "bias"):
            self.create_variable(
                name,
                WeightHParams(
                    shape=[self.num_layers, self.dim],
                    init=base_layer.WeightInit.Constant(0.0),
                    mesh_shape=self.mesh_shape,
                    tensor_split_dims_mapping=mapping,
                    collections=[base_layer.WeightHParamsCollection.SKIP_LP_REGULARIZATION],
                ),
            )

    def __call__(self) -> tuple[JTensor, JTensor]:
        return self.theta.scale, self.theta.bias


def _unstack_calls(tree: dict) -> dict:
    """Stats sown once per scan step come out as one stacked value: split them into one per
    call, in block order, as the unscanned encoder reports them."""
    return jax.tree_util.tree_map(
        lambda calls: tuple(value for stacked in calls for value in stacked),
        tree,
        is_leaf=lambda x: isinstance(x, tuple),
    )


def _sum_calls(tree: dict) -> dict:
    """Aux losses of the scan steps summed, as praxis sums repeated add_aux_loss calls."""
    return jax.tree_util.tree_map(jnp.sum, tree)


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
      scan_layers: one scanned block instead of num_layers unrolled ones (module docstring).
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
    scan_layers: bool = False

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
        if self.scan_layers:
            stacked = pax_fiddle.Config(
                StackedLayerNorms, num_layers=self.num_layers, dim=self.model_dims
            )
            self.create_child("attention_norms", stacked.clone())
            self.create_child("moe_norms", stacked.clone())
            return
        norm = self.ln_tpl.clone().set(dim=self.model_dims)
        self.create_children("attention_norms", [norm.clone() for _ in range(self.num_layers)])
        self.create_children("moe_norms", [norm.clone() for _ in range(self.num_layers)])

    def __call__(self, inputs: JTensor, paddings: JTensor) -> JTensor:
        """Applies the shared blocks to tokens [B, T, D] with paddings [B, T]."""
        mask = attentions.convert_paddings_to_mask(paddings, inputs.dtype)
        if self.scan_layers:
            return self._scanned(inputs, mask)

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

    def _scanned(self, inputs: JTensor, mask: JTensor) -> JTensor:
        def block(
            encoder: "WideNetEncoder", x: JTensor, norms: tuple[JTensor, ...], mask: JTensor
        ) -> tuple[JTensor, None]:
            attention_scale, attention_bias, moe_scale, moe_bias = norms
            normed = layer_norm(x, attention_scale, attention_bias)
            attended, _ = encoder.attention(normed, normed, normed, atten_mask=mask)
            x = x + attended
            return x + encoder.moe(layer_norm(x, moe_scale, moe_bias)), None

        if self.remat_policy is not None:
            policy = checkpoint_policy.custom_policy(self.remat_policy)
            block = nn.remat(block, policy=policy, prevent_cse=False)
        scan = nn.scan(
            block,
            variable_broadcast=[base_layer.PARAMS, base_layer.NON_TRAINABLE],
            variable_axes={STATS: 0, base_layer.AUX_LOSS: 0, base_layer.SUMMARIES: 0},
            # A fresh key per block: router noise and dropout differ from block to block.
            split_rngs={base_layer.PARAMS: False, base_layer.RANDOM: True},
            in_axes=(0, nn.broadcast),
            length=self.num_layers,
        )
        scan = nn.map_variables(
            scan, STATS, trans_out_fn=_unstack_calls, mutable=self.is_mutable_collection(STATS)
        )
        scan = nn.map_variables(
            scan,
            base_layer.AUX_LOSS,
            trans_out_fn=_sum_calls,
            mutable=self.is_mutable_collection(base_layer.AUX_LOSS),
        )
        norms = (*self.attention_norms(), *self.moe_norms())
        x, _ = scan(self, inputs, norms, mask)
        return x
