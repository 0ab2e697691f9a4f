"""The ViT-22B transformer block (Dehghani et al. 2023) as a praxis layer, each change a switch.

`Vit22bBlock` is a drop-in for `StackedTransformer.transformer_layer_params_tpl`: it accepts the
fields StackedTransformer sets on its layers and the call signature it uses, so a stack of them is
`StackedTransformer(transformer_layer_params_tpl=pax_fiddle.Config(Vit22bBlock, ...))`.

The paper's three changes to the standard pre-LN ViT block are independent fields, so an ablation
is one gin line:
  * `parallel`: y = x + MLP(LN(x)) + Attn(LN(x)) with one LayerNorm, instead of the sequential
    x' = x + Attn(LN1(x)); y = x' + MLP(LN2(x')).
  * `qk_norm`: LayerNorm on queries and keys over the per-head dim before the dot product, which
    keeps attention logits from growing without bound (the paper's training instability).
  * `use_bias`: no bias in the QKV / attention-out projections and in the LayerNorms; the MLP
    keeps its biases. The paper's LayerNorms are "without bias and centering": scale-only RMS
    normalisation, y = x / sqrt(mean(x^2) + eps) * scale (Zhang and Sennrich 2019), which
    `centered_norm` (default: follow use_bias) turns back into a mean-subtracting LayerNorm
    for the ablation.
`fused` is an implementation choice of the parallel block: QKV and MLP-in become one matmul, and
attention-out and MLP-out another, which computes the same function with fewer, bigger matmuls.

Notation used below: D = input_dims, N = num_heads, H = dim_per_head, A = N * H, M = hidden_dims.
"""

import math

import jax
from jax import numpy as jnp
from praxis import base_layer, pax_fiddle, pytypes
from praxis.layers import activations, normalizations, stochastics

from models.layer_norm import LayerNorm
from models.stats import sow_stat

JTensor = pytypes.JTensor
SplitDimsMapping = pytypes.SplitDimsMapping
LayerTpl = pax_fiddle.Config[base_layer.BaseLayer]
WeightHParams = base_layer.WeightHParams
WeightInit = base_layer.WeightInit
template_field = base_layer.template_field

# The einsum letters: b batch, t query position, s key position, n head, h per-head dim.
_LOGITS_EQ = "btnh,bsnh->bnts"
_CONTEXT_EQ = "bnts,bsnh->btnh"


def _concat_last(a: JTensor, b: JTensor) -> JTensor:
    """concatenate([a, b], axis=-1), written as pad + add.

    On multi-device CPU (the simulated meshes of the tests and the tiny CPU runs) XLA's SPMD
    partitioner returns wrong values for a concatenate along a dim sharded over the mesh
    (jax-ml/jax#19106; reproduced here with jax 0.4.26 and W_out sharded over 'model'). Zero
    padding both parts to the full width and adding them is the same tensor, partitions
    correctly, and keeps the single W_out matmul; the extra add is negligible next to it.
    """
    width_a, width_b = a.shape[-1], b.shape[-1]
    no_pad = [(0, 0)] * (a.ndim - 1)
    return jnp.pad(a, [*no_pad, (0, width_b)]) + jnp.pad(b, [*no_pad, (width_a, 0)])


class Vit22bBlock(base_layer.BaseLayer):
    """ViT-22B transformer block: parallel attention + MLP, QK-norm, no biases, fused matmuls.

    Attributes:
      input_dims: D, the model dimension (set by StackedTransformer from model_dims).
      hidden_dims: M, the MLP hidden dimension.
      num_heads: N, the number of attention heads.
      dim_per_head: H; None means input_dims // num_heads.
      parallel: True = one LayerNorm feeding attention and MLP in parallel, both added to x.
        False = the standard sequential pre-LN block with two LayerNorms.
      qk_norm: LayerNorm (one scale of size H for queries, one for keys, shared across heads)
        applied per head to queries and keys before the dot product.
      use_bias: False = no bias in Q/K/V, attention-out and every norm (MLP keeps its
        biases). True = biases everywhere, like a standard ViT.
      centered_norm: True = LayerNorm (subtract the mean, then divide by the std), False =
        RMSNorm (divide by the root mean square; no mean, no bias). None = use_bias, so the
        paper block (use_bias=False) is uncentred and the biased block a standard LayerNorm.
      fused: only with parallel=True: QKV and MLP-in are one [D, 3A + M] matrix, attention-out
        and MLP-out one [A + M, D] matrix. Ignored when parallel=False (sequential blocks cannot
        fuse across the residual), so `parallel=False` alone is a valid ablation.
      weight_init: init of every projection matrix; None = the layer's params_init.
      ln_tpl: LayerNorm template for centred block and QK norms; dim and use_bias set here.
      rms_norm_tpl: RmsNorm template for uncentred norms; dim and direct_scale set here.
      activation_tpl: MLP activation (praxis GELU).
      dropout_tpl: Dropout template; keep_prob is set from the *_dropout_prob fields.
      atten_dropout_prob: dropout on the attention probabilities.
      residual_dropout_prob: dropout on each branch output before it is added to the residual.
      relu_dropout_prob: dropout on the MLP hidden activations.
      residual_droppath_prob: probability of dropping a whole residual branch (per example).
      use_cross_attention: must be False (an encoder block); present because StackedTransformer
        sets it.
      packed_input: accepted for StackedTransformer; segment masking already arrives folded into
        attention_mask, so nothing else changes.
      tr_fflayer_tpl, ngrammer_tpl: set by StackedTransformer only for MoE layers / n-grammers,
        which this block does not support; must stay None.
    """

    input_dims: int = 0
    hidden_dims: int = 0
    num_heads: int | None = None
    dim_per_head: int | None = None
    parallel: bool = True
    qk_norm: bool = True
    use_bias: bool = False
    fused: bool = True
    centered_norm: bool | None = None
    weight_init: WeightInit | None = None
    ln_tpl: LayerTpl = template_field(LayerNorm)
    rms_norm_tpl: LayerTpl = template_field(normalizations.RmsNorm)
    activation_tpl: LayerTpl = template_field(activations.GELU)
    dropout_tpl: LayerTpl = template_field(stochastics.Dropout)
    atten_dropout_prob: float = 0.0
    residual_dropout_prob: float = 0.0
    relu_dropout_prob: float = 0.0
    residual_droppath_prob: float = 0.0
    use_cross_attention: bool = False
    packed_input: bool = False
    tr_fflayer_tpl: LayerTpl | None = template_field(None)
    ngrammer_tpl: LayerTpl | None = template_field(None)

    class WeightSharding(base_layer.BaseLayer.WeightSharding):
        """How the big matrices split over the mesh (used only when mesh_axis_names is set).

        Megatron-style: the wide dim (3A + M, or A / M unfused) goes on 'model', so the input
        projection needs no communication and the output projection one reduce.

        Attributes:
          w_in: [D, wide] matrices: W_in, and unfused w_q, w_k, w_v, w_mlp_in.
          w_out: [wide, D] matrices: W_out, and unfused w_o, w_mlp_out.
          b_in: biases on the wide dim: b_in, and unfused b_q, b_k, b_v, b_mlp_in.
        """

        w_in: SplitDimsMapping = (None, "model")
        w_out: SplitDimsMapping = ("model", None)
        b_in: SplitDimsMapping = ("model",)

    @property
    def head_dim(self) -> int:
        """H: the per-head dim, input_dims // num_heads unless dim_per_head is given."""
        return self.dim_per_head or self.input_dims // self.num_heads

    @property
    def attention_dims(self) -> int:
        """A = N * H: the width of the concatenated heads (equals D in every paper config)."""
        return self.num_heads * self.head_dim

    @property
    def is_centered(self) -> bool:
        """Whether the norms subtract the mean (LayerNorm) or not (RMSNorm)."""
        return self.use_bias if self.centered_norm is None else self.centered_norm

    @property
    def is_fused(self) -> bool:
        """Fusion only exists for the parallel block (sequential branches read different LNs)."""
        return self.parallel and self.fused

    def _check_config(self) -> None:
        if self.use_cross_attention:
            raise ValueError(
                "Vit22bBlock is an encoder block: use_cross_attention must be False "
                "(set StackedTransformer.use_cross_attention=False)."
            )
        if self.tr_fflayer_tpl is not None:
            raise ValueError(
                "Vit22bBlock has its own MLP and cannot take tr_fflayer_tpl "
                "(StackedTransformer sets it for moe_layers; use models.moe layers instead)."
            )
        if self.ngrammer_tpl is not None:
            raise ValueError("Vit22bBlock does not support ngrammer_tpl.")
        if self.input_dims <= 0 or self.hidden_dims <= 0 or not self.num_heads:
            raise ValueError(
                "Vit22bBlock needs input_dims, hidden_dims and num_heads > 0, got "
                f"{self.input_dims}, {self.hidden_dims}, {self.num_heads}."
            )
        if self.dim_per_head is None and self.input_dims % self.num_heads:
            raise ValueError(
                f"input_dims {self.input_dims} is not divisible by num_heads {self.num_heads}; "
                "set dim_per_head."
            )

    def _sharding(self, mapping: SplitDimsMapping) -> SplitDimsMapping:
        # Mesh-axis names in a mapping are only meaningful with a named mesh; without one, leave
        # the weights unannotated (replicated) instead of failing on an unknown axis name.
        return mapping if self.mesh_axis_names is not None else None

    def _matrix(self, name: str, shape: list[int], mapping: SplitDimsMapping) -> None:
        self.create_variable(
            name,
            WeightHParams(
                shape=shape,
                init=self.weight_init,
                mesh_shape=self.mesh_shape,
                tensor_split_dims_mapping=self._sharding(mapping),
            ),
        )

    def _bias(self, name: str, dims: int, mapping: SplitDimsMapping = None) -> None:
        self.create_variable(
            name,
            WeightHParams(
                shape=[dims],
                init=WeightInit.Constant(0.0),
                mesh_shape=self.mesh_shape,
                tensor_split_dims_mapping=self._sharding(mapping),
            ),
        )

    def _layer_norm(self, name: str, dim: int) -> None:
        if self.is_centered:
            p = self.ln_tpl.clone()
            p.use_bias = self.use_bias
        else:
            p = self.rms_norm_tpl.clone()
            # Stored as an offset from 1, as praxis LayerNorm stores its scale, so weight decay
            # pulls both norms towards unit scale and the ablation changes only the centring.
            p.direct_scale = False
        p.dim = dim
        self.create_child(name, p)

    def _dropout(self, name: str, prob: float) -> None:
        p = self.dropout_tpl.clone()
        p.keep_prob = 1.0 - prob
        self.create_child(name, p)

    def setup(self) -> None:
        self._check_config()
        d, a, m = self.input_dims, self.attention_dims, self.hidden_dims
        wp = self.weight_split_dims_mapping

        if self.parallel:
            self._layer_norm("layer_norm", d)
        else:
            self._layer_norm("attention_layer_norm", d)
            self._layer_norm("mlp_layer_norm", d)
        if self.qk_norm:
            self._layer_norm("query_norm", self.head_dim)
            self._layer_norm("key_norm", self.head_dim)

        if self.is_fused:
            self._matrix("w_in", [d, 3 * a + m], wp.w_in)
            # Without use_bias only the MLP columns carry a bias; with it, Q/K/V do too.
            self._bias("b_in", 3 * a + m if self.use_bias else m, wp.b_in)
            self._matrix("w_out", [a + m, d], wp.w_out)
            # One output bias: the MLP-out bias (+ the attention-out bias when use_bias), since
            # two biases added to the same sum are one parameter vector.
            self._bias("b_out", d)
        else:
            for name in ("w_q", "w_k", "w_v"):
                self._matrix(name, [d, a], wp.w_in)
            self._matrix("w_o", [a, d], wp.w_out)
            if self.use_bias:
                for name in ("b_q", "b_k", "b_v"):
                    self._bias(name, a, wp.b_in)
                self._bias("b_o", d)
            self._matrix("w_mlp_in", [d, m], wp.w_in)
            self._bias("b_mlp_in", m, wp.b_in)
            self._matrix("w_mlp_out", [m, d], wp.w_out)
            self._bias("b_mlp_out", d)

        self.create_child("activation", self.activation_tpl.clone())
        self._dropout("atten_dropout", self.atten_dropout_prob)
        self._dropout("relu_dropout", self.relu_dropout_prob)
        self._dropout("residual_dropout", self.residual_dropout_prob)
        if self.residual_droppath_prob > 0.0:
            self.create_child(
                "residual_droppath",
                pax_fiddle.Config(
                    stochastics.StochasticResidual,
                    survival_prob=1.0 - self.residual_droppath_prob,
                ),
            )

    # ----------------------------------------------------------------------------------------
    # Pieces.

    def _split_heads(self, x: JTensor) -> JTensor:
        return x.reshape(*x.shape[:-1], self.num_heads, self.head_dim)

    def _attention(
        self, q: JTensor, k: JTensor, v: JTensor, attention_mask: JTensor | None
    ) -> JTensor:
        """Multi-head attention on [B, T, A] projections; returns the merged heads [B, T, A]."""
        q, k, v = self._split_heads(q), self._split_heads(k), self._split_heads(v)
        if self.qk_norm:
            # LayerNorm over the last (per-head) dim: one scale of size H shared by all heads.
            q = self.query_norm(q)
            k = self.key_norm(k)
        q = q * jnp.asarray(1.0 / math.sqrt(self.head_dim), q.dtype)
        # Softmax (and the logits feeding it) in float32: low-precision logits are exactly what
        # the ViT-22B instability is about, and bf16 softmax loses the small probabilities.
        logits = jnp.einsum(_LOGITS_EQ, q, k).astype(jnp.float32)
        if attention_mask is not None:
            logits = logits + attention_mask.astype(jnp.float32)
        # Max over the masked logits: masked entries sit at a huge negative value, so padded
        # keys do not count, while a real exploding q.k does.
        sow_stat(self, "max_attention_logit", jnp.max(logits))
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        probs = self.atten_dropout(probs)
        context = jnp.einsum(_CONTEXT_EQ, probs, v)
        return context.reshape(*context.shape[:-2], self.attention_dims)

    def _mlp_hidden(self, pre_activation: JTensor) -> JTensor:
        return self.relu_dropout(self.activation(pre_activation))

    def _residual(self, inputs: JTensor, branch: JTensor) -> JTensor:
        branch = self.residual_dropout(branch)
        if self.residual_droppath_prob > 0.0:
            return self.residual_droppath(inputs, branch)
        return inputs + branch

    def _qkv_unfused(self, x: JTensor) -> tuple[JTensor, JTensor, JTensor]:
        th = self.theta
        q = jnp.einsum("btd,da->bta", x, th.w_q)
        k = jnp.einsum("btd,da->bta", x, th.w_k)
        v = jnp.einsum("btd,da->bta", x, th.w_v)
        if self.use_bias:
            q, k, v = q + th.b_q, k + th.b_k, v + th.b_v
        return q, k, v

    def _attention_out_unfused(self, context: JTensor) -> JTensor:
        out = jnp.einsum("bta,ad->btd", context, self.theta.w_o)
        return out + self.theta.b_o if self.use_bias else out

    def _mlp_unfused(self, x: JTensor) -> JTensor:
        th = self.theta
        hidden = self._mlp_hidden(jnp.einsum("btd,dm->btm", x, th.w_mlp_in) + th.b_mlp_in)
        return jnp.einsum("btm,md->btd", hidden, th.w_mlp_out) + th.b_mlp_out

    def _parallel_fused(self, x: JTensor, attention_mask: JTensor | None) -> JTensor:
        th = self.theta
        a = self.attention_dims
        h = jnp.einsum("btd,dk->btk", x, th.w_in)
        # Without use_bias, b_in covers only the MLP columns: zero-pad it over Q/K/V and add it
        # before the split, so XLA fuses the add into the matmul's output as it does with bias.
        b_in = th.b_in if self.use_bias else jnp.pad(th.b_in, (3 * a, 0))
        q, k, v, mlp_pre = jnp.split(h + b_in, [a, 2 * a, 3 * a], axis=-1)
        context = self._attention(q, k, v, attention_mask)
        hidden = self._mlp_hidden(mlp_pre)
        # concat(heads, mlp hidden) @ W_out == heads @ W_out[:A] + hidden @ W_out[A:]: the two
        # branch outputs summed, as the parallel block wants, in one matmul.
        out = jnp.einsum("btk,kd->btd", _concat_last(context, hidden), th.w_out)
        return out + th.b_out

    # ----------------------------------------------------------------------------------------

    def __call__(
        self,
        inputs: JTensor,
        paddings: JTensor,
        attention_mask: JTensor | None,
        cross_inputs: JTensor | None = None,
        cross_attention_mask: JTensor | None = None,
        segment_pos: JTensor | None = None,
        segment_ids: JTensor | None = None,
    ) -> tuple[JTensor, None]:
        """Applies the block.

        Args:
          inputs: [B, T, D].
          paddings: [B, T]; unused beyond what attention_mask already encodes (an encoder block
            over image patches has no padding of its own).
          attention_mask: praxis additive mask broadcastable to [B, N, T, T] (0 = attend, a
            large negative number = masked), added to the logits; None = attend everywhere.
          cross_inputs, cross_attention_mask: must be None (no cross attention).
          segment_pos, segment_ids: accepted for StackedTransformer; the block uses no
            positions (they are added to the patch embeddings before the stack).

        Returns:
          (outputs [B, T, D], None): the second item stands where praxis Transformer returns
          attention probabilities, which are not kept here.
        """
        del paddings, segment_pos, segment_ids
        if cross_inputs is not None or cross_attention_mask is not None:
            raise ValueError("Vit22bBlock has no cross attention; pass cross_inputs=None.")

        if self.parallel:
            x = self.layer_norm(inputs)
            if self.is_fused:
                branch = self._parallel_fused(x, attention_mask)
            else:
                context = self._attention(*self._qkv_unfused(x), attention_mask)
                branch = self._attention_out_unfused(context) + self._mlp_unfused(x)
            return self._residual(inputs, branch), None

        x = self.attention_layer_norm(inputs)
        context = self._attention(*self._qkv_unfused(x), attention_mask)
        after_attention = self._residual(inputs, self._attention_out_unfused(context))
        mlp_out = self._mlp_unfused(self.mlp_layer_norm(after_attention))
        return self._residual(after_attention, mlp_out), None


def vit22b_block_param_count(
    input_dims: int,
    hidden_dims: int,
    num_heads: int,
    dim_per_head: int | None = None,
    *,
    parallel: bool = True,
    qk_norm: bool = True,
    use_bias: bool = False,
    fused: bool = True,
    centered_norm: bool | None = None,
) -> int:
    """Exact number of parameters of one Vit22bBlock with these settings (for configs/reports).

    With D, M, H, A = N * H, b = 1 if use_bias else 0, and n = 1 if the norms are centred
    LayerNorms with a bias (use_bias and centered_norm is not False) else 0 (scale only):
      Norms: (1 if parallel else 2) * (1 + n) * D, plus 2 * (1 + n) * H with qk_norm.
      Matrices: 4 * D * A + 2 * D * M (fused or not).
      Biases: M + D for the MLP, plus b * 3A for Q/K/V, plus b * D for attention-out unless the
      block is fused (then it is folded into the single output bias).
    """
    d, m = input_dims, hidden_dims
    h = dim_per_head or input_dims // num_heads
    a = num_heads * h
    b = int(use_bias)
    is_fused = parallel and fused
    centered = use_bias if centered_norm is None else centered_norm
    n = int(use_bias and centered)
    block_norms = (1 if parallel else 2) * (1 + n) * d
    qk_norms = 2 * (1 + n) * h if qk_norm else 0
    matrices = 4 * d * a + 2 * d * m
    biases = m + d + b * 3 * a + (0 if is_fused else b * d)
    return block_norms + qk_norms + matrices + biases
