"""Image classifier shell shared by every family: patches in, encoder, class logits out.

The encoder (a praxis StackedTransformer for ViT, V-MoE and ViT-22B; WideNetEncoder for
WideNet) is a template, so the families differ only in what they put there.

Layout follows the original ViT and the V-MoE reference code rather than praxis's
VitEntryLayers default: the class token is prepended *before* the learned position
embedding is added, so the table has N+1 rows. That is what makes ViT-B/16 exactly
86,567,656 parameters with a 1000-class head.
"""

import jax.numpy as jnp
from praxis import base_layer, pax_fiddle
from praxis.layers import activations, linears, normalizations, transformers

from models import patch_stem
from models.layer_norm import LayerNorm

JTensor = base_layer.JTensor
LayerTpl = pax_fiddle.Config[base_layer.BaseLayer]
WeightHParams = base_layer.WeightHParams
WeightInit = base_layer.WeightInit
template_field = base_layer.template_field

POOLING_TYPES = ("token", "gap")


class VisionTransformerClassifier(base_layer.BaseLayer):
    """Patch embedding + position embedding + encoder + LayerNorm + pooling + head.

    Attributes:
      image_size: Input height and width in pixels (square images).
      patch_size: Patch height and width; must divide image_size.
      num_channels: Input channels (3 for RGB, 1 for Fashion-MNIST).
      model_dims: Token width D.
      num_classes: Classifier outputs.
      pooling: 'token' (class token, as ViT and V-MoE) or 'gap' (mean over tokens, no class
        token, as ViT-22B).
      pre_logits: Adds the upstream Dense(D)+tanh representation layer before the head.
      use_final_norm_bias: False drops the bias of the final LayerNorm (ViT-22B style).
      final_norm_centered: False makes the final norm a scale-only RMSNorm (ViT-22B's
        "LayerNorm without bias and centering"); it then has no bias whatever
        use_final_norm_bias says.
      encoder_tpl: Any layer called as encoder(tokens [B, T, D], paddings [B, T]) -> [B, T, D].
    """

    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    model_dims: int = 768
    num_classes: int = 1000
    pooling: str = "token"
    pre_logits: bool = False
    use_final_norm_bias: bool = True
    final_norm_centered: bool = True
    encoder_tpl: LayerTpl = template_field(transformers.StackedTransformer)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        return self.num_patches + (1 if self.pooling == "token" else 0)

    def setup(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size={self.image_size} is not divisible by patch_size="
                f"{self.patch_size}; choose a patch size that divides the image size"
            )
        if self.pooling not in POOLING_TYPES:
            raise ValueError(f"pooling={self.pooling!r} is unknown; use one of {POOLING_TYPES}")
        # The stem convolves patches and prepends the class token, with praxis
        # VitEntryLayers' parameters (models/patch_stem.py says why it is not that layer);
        # the position embedding is ours, added after the class token so it gets one too.
        self.create_child(
            "patch_embedding",
            pax_fiddle.Config(
                patch_stem.PatchEmbedding,
                patch_size=self.patch_size,
                input_dims=self.patch_size**2 * self.num_channels,
                output_dims=self.model_dims,
                prepend_cls_tokens=1 if self.pooling == "token" else 0,
            ),
        )
        self.create_variable(
            "position_embedding",
            WeightHParams(
                shape=[1, self.num_tokens, self.model_dims],
                init=WeightInit.Gaussian(0.02),
                tensor_split_dims_mapping=[None, None, None],  # small: replicated
            ),
        )
        self.create_child("encoder", self.encoder_tpl.clone())
        if self.final_norm_centered:
            final_norm = pax_fiddle.Config(
                LayerNorm, dim=self.model_dims, use_bias=self.use_final_norm_bias
            )
        else:
            final_norm = pax_fiddle.Config(
                normalizations.RmsNorm, dim=self.model_dims, direct_scale=False
            )
        self.create_child("final_norm", final_norm)
        if self.pre_logits:
            self.create_child(
                "pre_logits_layer",
                pax_fiddle.Config(
                    linears.FeedForward,
                    input_dims=self.model_dims,
                    output_dims=self.model_dims,
                    activation_tpl=pax_fiddle.Config(activations.Tanh),
                ),
            )
        self.create_child(
            "head",
            pax_fiddle.Config(
                linears.FeedForward,
                input_dims=self.model_dims,
                output_dims=self.num_classes,
                activation_tpl=pax_fiddle.Config(activations.Identity),
            ),
        )

    def __call__(self, images: JTensor) -> JTensor:
        """Maps images [B, H, W, C] to class logits [B, num_classes] (float32).

        Weights are cast to `fprop_dtype` when read (praxis's theta), but an op on float32
        images and bfloat16 weights runs in float32; casting the images is what puts every
        matmul after them in the compute dtype. The logits go back to float32 for the loss.
        """
        images = images.astype(self.fprop_dtype)
        tokens = self.patch_embedding(images) + self.theta.position_embedding
        paddings = jnp.zeros(tokens.shape[:2], dtype=tokens.dtype)
        tokens = self.final_norm(self.encoder(tokens, paddings))
        pooled = tokens[:, 0] if self.pooling == "token" else jnp.mean(tokens, axis=1)
        if self.pre_logits:
            pooled = self.pre_logits_layer(pooled)
        return self.head(pooled).astype(jnp.float32)
