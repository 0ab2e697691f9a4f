"""The patch stem: images -> patch tokens (+ class token), as one strided convolution.

A linear layer on flattened p x p patches is the ViT patch convolution, and the parameters
stay exactly those of praxis's `VitEntryLayers` (`patch_projection/linear/w` [p*p*C, D],
`patch_projection/bias/b` [D], `prepend_cls_embs` [1, n, D]), so checkpoints, importers and
initial values are unchanged. Only the computation differs: praxis patchifies with a
rearrange and then multiplies, and XLA:CPU then writes the kernel's gradient through one loop
fusion with the token axis minor (transposed), which made a dense ViT's train step about 10%
slower than big_vision's convolution stem on the same weights (issue 27). A convolution with
the kernel viewed as [p, p, C, D] (HWIO, the order praxis flattens patches in) takes its
gradient in that layout directly.
"""

import jax
import jax.numpy as jnp
from praxis import base_layer, pax_fiddle
from praxis.layers import activations, linears

JTensor = base_layer.JTensor
WeightHParams = base_layer.WeightHParams
WeightInit = base_layer.WeightInit


class PatchConvLinear(linears.Linear):
    """praxis `Linear` whose input is images [B, H, W, C]: a stride-p convolution with `w`
    [p*p*C, D] viewed as HWIO, giving tokens [B, (H/p)*(W/p), D] in row-major patch order."""

    patch_size: int = 0

    def __call__(self, inputs: JTensor) -> JTensor:
        p = self.patch_size
        channels = inputs.shape[-1]
        kernel = jnp.reshape(self.theta.w, (p, p, channels, self.output_dims))
        features = jax.lax.conv_general_dilated(
            inputs,
            kernel,
            window_strides=(p, p),
            padding="VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        batch, rows, columns, dims = features.shape
        return jnp.reshape(features, (batch, rows * columns, dims))


class PatchEmbedding(base_layer.BaseLayer):
    """Images [B, H, W, C] -> tokens [B, n + N, D]: n class tokens, then the N patches.

    Attributes:
      patch_size: p; must divide the image height and width.
      input_dims: p * p * C, the flattened patch (the parameter shape praxis uses).
      output_dims: D.
      prepend_cls_tokens: n, learned tokens put before the patches (zero-initialised).
    """

    patch_size: int = 0
    input_dims: int = 0
    output_dims: int = 0
    prepend_cls_tokens: int = 0

    def setup(self) -> None:
        self.create_child(
            "patch_projection",
            pax_fiddle.Config(
                linears.FeedForward,
                input_dims=self.input_dims,
                output_dims=self.output_dims,
                linear_tpl=pax_fiddle.Config(PatchConvLinear, patch_size=self.patch_size),
                activation_tpl=pax_fiddle.Config(activations.Identity),
            ),
        )
        if self.prepend_cls_tokens > 0:
            self.create_variable(
                "prepend_cls_embs",
                WeightHParams(
                    shape=[1, self.prepend_cls_tokens, self.output_dims],
                    init=WeightInit.Constant(0.0),
                ),
            )

    def __call__(self, images: JTensor) -> JTensor:
        height, width, channels = images.shape[1:]
        p = self.patch_size
        if height % p or width % p or p * p * channels != self.input_dims:
            raise ValueError(
                f"images {images.shape} do not fit patch_size={p} and input_dims="
                f"{self.input_dims}; feed [B, H, W, C] with p dividing H and W and "
                "p * p * C == input_dims"
            )
        tokens = self.patch_projection(images)
        if self.prepend_cls_tokens == 0:
            return tokens
        cls = jnp.tile(self.theta.prepend_cls_embs, (tokens.shape[0], 1, 1))
        return jnp.concatenate((cls, tokens), axis=1)
