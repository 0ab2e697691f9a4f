"""Model size and compute, with the one set of definitions used by inspect, report and runs.

- params_total: every weight.
- params_body: everything but the pre-logits layer and the classifier head, so counts compare
  with the papers whatever the head.
- params_active: weights a single token touches at inference. Top-k experts count k of E (k =
  the inference-time number of selected experts); Expert Choice experts count the average
  number of experts that take a token (E x capacity / group tokens) of E; a Soft MoE token
  mixes every expert's slots, so all its experts count.
- gflops_per_image: analytic forward FLOPs of one image, 2 FLOPs per multiply-add, counting
  matmuls only (patch embedding, attention projections and score/value products, MLPs, the
  experts' work per token plus the router, pre-logits and head). LayerNorm, softmax, GELU and
  the top-k dispatch are left out, and capacity padding is not counted. An MoE layer costs
  `expert_passes_per_token` expert MLPs per token (top-k: k; Expert Choice: E x capacity /
  group tokens; Soft MoE: E x slots / group tokens) plus its router (d x E per token; Soft
  MoE: 3 d x E x slots per token, for the logits, the slot inputs and the combine).
- xla_gflops_per_image: XLA's own `cost_analysis()` count of the inference forward at one
  routing group of images (one image for dense models), divided by the images, which also
  counts elementwise work and the one-hot dispatch einsums. It is read from the
  lowered HLO, before backend optimisation: that needs no compilation (seconds even for
  ViT-22B), and it is the same on every backend, whereas the CPU backend's compiled count
  leaves out matmuls it hands to library calls. A scanned stack (VitSpec.scan_layers) is
  counted unrolled, since XLA counts a loop body once.
- Parameter counts and bytes include every layer of a scanned stack (`full_shape`).
"""

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from praxis import base_layer, pax_fiddle

from models.moe.router_registry import ROUTERS
from models.specs import ModelSpec

HEAD_LAYERS = ("head", "pre_logits_layer")
BYTES_PER_PARAM = 4  # weights are kept in float32


@dataclasses.dataclass(frozen=True)
class ParamCounts:
    total: int
    body: int
    active: int


def abstract_variables(model_config: pax_fiddle.Config, spec: ModelSpec) -> dict[str, Any]:
    """WeightHParams (shapes and sharding metadata) of every variable, without allocating."""
    model = base_layer.instantiate(model_config)
    return model.abstract_init_with_metadata(_images(spec), do_eval=True)[base_layer.PARAMS]


def _images(spec: ModelSpec) -> jax.ShapeDtypeStruct:
    """The smallest input batch the model takes (a routing group of a sparse model)."""
    size, channels = spec.vit.image_size, spec.vit.num_channels
    return jax.ShapeDtypeStruct((spec.min_batch, size, size, channels), jnp.float32)


def weights_with_paths(variables: Mapping[str, Any]) -> list[tuple[str, base_layer.WeightHParams]]:
    flat = jax.tree_util.tree_flatten_with_path(
        variables, is_leaf=lambda x: isinstance(x, base_layer.WeightHParams)
    )[0]
    return [("/".join(str(getattr(k, "key", k)) for k in path), leaf) for path, leaf in flat]


def full_shape(weight: base_layer.WeightHParams) -> tuple[int, ...]:
    """The stored shape: a scanned stack (VitSpec.scan_layers) keeps one copy of a block's
    weight per layer, stacked on leading axes that praxis records apart, in `repeat_prefix`."""
    return (*(weight.repeat_prefix or ()), *weight.shape)


def full_split_dims_mapping(weight: base_layer.WeightHParams) -> tuple[Any, ...]:
    """`full_shape`'s mesh axis per dimension (the stacked layer axes are not split)."""
    prefix = weight.repeat_prefix or ()
    prefix_mapping = weight.repeat_prefix_split_dims_mapping or (None,) * len(prefix)
    return (*prefix_mapping, *(weight.tensor_split_dims_mapping or (None,) * len(weight.shape)))


def is_expert_weight(weight: base_layer.WeightHParams) -> bool:
    """Expert weights are the ones split over the 'expert' mesh axis on their leading dim."""
    mapping = weight.tensor_split_dims_mapping
    return bool(mapping) and mapping[0] == "expert"


def count_params(variables: Mapping[str, Any], spec: ModelSpec) -> ParamCounts:
    total = body = active = 0
    for path, weight in weights_with_paths(variables):
        size = math.prod(full_shape(weight))
        total += size
        if path.split("/")[0] not in HEAD_LAYERS:
            body += size
        if is_expert_weight(weight):
            active += round(size * _active_expert_share(spec))
        else:
            active += size
    return ParamCounts(total=total, body=body, active=active)


def _tokens_per_image(spec: ModelSpec) -> int:
    patches = (spec.vit.image_size // spec.vit.patch_size) ** 2
    return patches + (1 if spec.pooling == "token" else 0)


def expert_passes_per_token(spec: ModelSpec) -> float:
    """Expert MLPs evaluated per token of an MoE layer at inference, on average."""
    group_tokens = spec.moe.group_images * _tokens_per_image(spec)
    return ROUTERS[spec.moe.router].expert_passes(spec.moe, group_tokens)


def _active_expert_share(spec: ModelSpec) -> float:
    if spec.moe.router == "soft":
        return 1.0
    return expert_passes_per_token(spec) / spec.moe.num_experts


def analytic_gflops_per_image(spec: ModelSpec) -> float:
    """Forward GFLOPs of one image under the definition in this module's docstring."""
    v = spec.vit
    patches = (v.image_size // v.patch_size) ** 2
    tokens = _tokens_per_image(spec)
    d = v.model_dims
    macs = patches * v.patch_size**2 * v.num_channels * d
    attention = 4 * tokens * d * d + 2 * tokens * tokens * d
    dense_mlp = 2 * tokens * d * v.mlp_dims
    expert_dims = spec.moe.expert_mlp_dims or v.mlp_dims
    router = tokens * d * ROUTERS[spec.moe.router].router_macs_per_token(spec.moe)
    sparse_mlp = expert_passes_per_token(spec) * 2 * tokens * d * expert_dims + router
    moe_layers = set(spec.moe_layers)
    for i in range(v.num_layers):
        macs += attention + (sparse_mlp if i in moe_layers else dense_mlp)
    macs += d * v.num_classes + (d * d if v.pre_logits else 0)
    return 2 * macs / 1e9


def xla_gflops_per_image(model_config: pax_fiddle.Config, spec: ModelSpec) -> float | None:
    """XLA's FLOP count of the lowered inference forward per image (None if unreported)."""
    model = base_layer.instantiate(model_config)
    images = _images(spec)
    context = base_layer.JaxContext.HParams(do_eval=True)

    def init(x):
        with base_layer.JaxContext.new_context(hparams=context):
            return model.init(jax.random.PRNGKey(0), x)

    def forward(variables, x):
        with base_layer.JaxContext.new_context(hparams=context):
            return model.apply(variables, x, mutable=True)[0]

    variables = jax.eval_shape(init, images)
    cost = jax.jit(forward).lower(variables, images).cost_analysis()
    if isinstance(cost, list):  # older JAX returns one dict per computation
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"]) / spec.min_batch / 1e9


def param_bytes_per_device(
    variables: Mapping[str, Any], mesh_shape: Sequence[int], axis_names: Sequence[str]
) -> int:
    """Bytes of weights each device holds when every weight is split as its metadata says."""
    sizes = dict(zip(axis_names, mesh_shape, strict=True))
    total = 0
    for _, weight in weights_with_paths(variables):
        shards = 1
        for dim_axes in full_split_dims_mapping(weight):
            # An entry is an axis name, a tuple of names, or None / -1 for "replicated".
            names = (dim_axes,) if isinstance(dim_axes, str) else dim_axes
            if isinstance(names, tuple | list):
                shards *= math.prod(sizes.get(axis, 1) for axis in names)
        total += math.ceil(math.prod(full_shape(weight)) / shards) * BYTES_PER_PARAM
    return total
