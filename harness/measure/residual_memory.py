"""What the backward pass keeps, per device, read from JAX's own trace of the training loss.

`jax.linearize` of the trainer's loss (harness.runtime.steps.apply_model, the gin file's
classification loss and the routers' aux losses) under each block's checkpoint policy splits
the program into a forward part and the linear backward; the values the backward needs from the
forward are its residuals. jax's `saved_residuals` (jax._src.ad_checkpoint, the function behind
`jax.ad_checkpoint.print_saved_residuals`) lists them by shape and dtype. Everything here is
traced abstractly (ShapeDtypeStructs: no FLOPs, no compile, no weights in memory), in seconds
even for the largest configs.

How a full-size figure is put together:
- Block kinds are traced apart, each at depths 1 and 2 (the difference is one block's
  residuals, the rest is the stem, head and loss): 'dense' (a ViT or ViT-22B block, and the
  dense blocks of a V-MoE), 'moe' (a V-MoE / Soft MoE block, traced as the same model with an
  MoE in every block), 'shared' (a WideNet block: the shared attention and MoE with its own
  LayerNorms). Full depth = fixed + sum over kinds of blocks x per-block bytes. Exact: each
  block's residuals are its own.
- Each trace is at one and two routing groups of images (one and two images for dense
  models) and the bytes are linear in between: exact for per-image tensors and for MoE
  buffers, whose capacity is per routing group.
- The trace has no mesh: it is run at the images one device sees in one micro-batch, which is
  how the data and expert axes split the activations (all-to-all dispatch keeps each device's
  expert buffers the size of its own groups' buffers). A residual shaped like a weight (its
  compute-dtype copy) is split as the trainer splits that weight over 'expert' and 'model'
  (not 'data': under FSDP the copy is of the gathered weight). Another residual with a
  dimension that the 'model' axis splits (heads, the MLP width) is divided by the model axis
  size: an estimate of XLA's partitioning, which may split others or replicate these.
- Residuals that are the loss function's own arguments (the f32 weights, the images) are left
  out: the plan counts weights and batch on their own lines.
- The list is jaxpr-level: XLA may fuse some of these values away, so for 'none' and
  'dots_saveable' it is an upper bound on what an accelerator keeps; for 'full' (only each
  block's input) XLA has nothing left to drop.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax._src import ad_checkpoint
from jax.sharding import PartitionSpec
from praxis import base_layer

from harness.measure import params_flops
from harness.measure.weight_memory import Weights, shards
from harness.runtime.losses import classification_loss
from harness.runtime.steps import apply_model, aux_losses_by_name
from models import builders
from models.specs import MESH_AXES, REMAT_POLICIES, ModelSpec

TRACED_DEPTHS = (1, 2)


@dataclasses.dataclass(frozen=True)
class BlockResiduals:
    """Bytes per device of one block kind's residuals at `images` per device."""

    kind: str
    count: int  # blocks of this kind at full depth
    per_block: int  # under the spec's remat policy
    per_block_none: int  # with nothing rematerialised: what one block's recompute holds


@dataclasses.dataclass(frozen=True)
class Residuals:
    """What the backward pass keeps for one micro-batch of `images` per device."""

    remat: str
    images: int
    fixed: int  # stem, head and loss: once per step
    blocks: tuple[BlockResiduals, ...]

    @property
    def kept(self) -> int:
        """Every block's saved residuals plus the fixed part, held until the backward pass
        reaches them."""
        return self.fixed + sum(b.count * b.per_block for b in self.blocks)

    @property
    def recompute_peak(self) -> int:
        """Under remat, the backward pass re-runs one block's forward and holds all of its
        intermediates while that block's gradient is formed: the largest block's residuals
        with nothing rematerialised, less what the policy already keeps of it."""
        if self.remat == "none":
            return 0
        return max(b.per_block_none - b.per_block for b in self.blocks)

    @property
    def total(self) -> int:
        return self.kept + self.recompute_peak


def block_kinds(spec: ModelSpec) -> dict[str, tuple[ModelSpec, int]]:
    """Each block kind of `spec`: a spec whose every block is of that kind, and its count."""
    layers = spec.vit.num_layers
    if spec.family in ("vit", "vit22b"):
        return {"dense": (spec, layers)}
    if spec.family == "widenet":
        return {"shared": (spec, layers)}
    moe = len(spec.moe_layers)
    # Placement 'every_1' puts an MoE in every block; the family 'vit' builds V-MoE's dense
    # block (the same builders._dense_block).
    all_moe = dataclasses.replace(spec, moe=dataclasses.replace(spec.moe, placement="every_1"))
    kinds = {"moe": (all_moe, moe)}
    if moe < layers:
        kinds["dense"] = (dataclasses.replace(spec, family="vit"), layers - moe)
    return kinds


def residuals(
    spec: ModelSpec,
    images: int,
    compute_dtype: str = "float32",
    loss: str = "softmax",
    axes: tuple[int, int] = (1, 1),
    remat: str | None = None,
) -> Residuals:
    """The residuals of `spec` (under `remat`, default VitSpec.remat) for `images` per device,
    in `compute_dtype`, with `axes` = the sizes of the ('expert', 'model') mesh axes."""
    remat = remat or spec.vit.remat
    if remat not in REMAT_POLICIES:
        raise ValueError(f"remat={remat!r} is unknown; use one of {REMAT_POLICIES}")
    group = spec.min_batch
    if images < group or images % group:
        raise ValueError(
            f"{images} images per device is not a whole number of {group}-image groups"
        )
    blocks, fixed = [], 0
    for kind, (kind_spec, count) in block_kinds(spec).items():
        if count == 0:
            continue
        per_block, fixed_here = _per_block_and_fixed(
            kind_spec, remat, images, compute_dtype, loss, axes
        )
        none, _ = _per_block_and_fixed(kind_spec, "none", images, compute_dtype, loss, axes)
        blocks.append(BlockResiduals(kind, count, per_block, none))
        fixed = max(fixed, fixed_here)  # the same stem and head; an MoE model's adds aux losses
    return Residuals(remat=remat, images=images, fixed=fixed, blocks=tuple(blocks))


def _per_block_and_fixed(
    spec: ModelSpec, remat: str, images: int, dtype: str, loss: str, axes: tuple[int, int]
) -> tuple[int, int]:
    """One block's bytes and the depth-independent bytes at `images`, linear in the images
    between one and two routing groups (exact where every residual is per image or per
    group; the weight-shaped ones are per step and stay in the intercept)."""
    group = spec.min_batch
    at = {}
    for n in (group, 2 * group):
        one, two = (
            traced_bytes(_at_depth(spec, remat, depth), n, dtype, loss, axes)
            for depth in TRACED_DEPTHS
        )
        at[n] = (two - one, 2 * one - two)  # (per block, fixed)
    (block_a, fixed_a), (block_b, fixed_b) = at[group], at[2 * group]
    groups = images // group
    return block_a + (groups - 1) * (block_b - block_a), fixed_a + (groups - 1) * (
        fixed_b - fixed_a
    )


def _at_depth(spec: ModelSpec, remat: str, depth: int) -> ModelSpec:
    """`spec` with `depth` blocks of its (single) kind under `remat`; unscanned, since a scan
    keeps per block what the unrolled stack keeps."""
    vit = dataclasses.replace(spec.vit, num_layers=depth, remat=remat, scan_layers=False)
    return dataclasses.replace(spec, vit=vit)


def traced_bytes(spec: ModelSpec, images: int, dtype: str, loss: str, axes: tuple[int, int]) -> int:
    """Bytes per device of the residuals jax's linearize keeps for the loss of `spec` on
    `images` images, the loss's own arguments left out."""
    sizes = dict(zip(MESH_AXES, (1, *axes), strict=True))
    weight_pieces: dict[tuple[int, ...], int] = {}
    for shape, partition in weight_partitions(_at_depth(spec, "none", 1)):
        pieces = shards(partition, sizes)
        weight_pieces[shape] = min(weight_pieces.get(shape, pieces), pieces)
    split_dims, model = model_split_dims(spec), axes[1]
    total = 0
    for shape, itemsize in saved(spec, images, dtype, loss):
        pieces = weight_pieces.get(shape)
        if pieces is None:
            split = any(d in split_dims and d % model == 0 for d in shape)
            pieces = model if model > 1 and split else 1
        total += math.ceil(math.prod(shape) * itemsize / pieces)
    return total


@functools.lru_cache(maxsize=256)
def saved(spec: ModelSpec, images: int, dtype: str, loss: str) -> tuple[tuple[tuple, int], ...]:
    """(shape, bytes per element) of each value jax's linearize keeps for the backward pass,
    the loss function's own arguments (weights, images, labels) left out."""
    model = base_layer.instantiate(builders.build_model(spec, None, dtype))
    size, channels = spec.vit.image_size, spec.vit.num_channels
    batch = jax.ShapeDtypeStruct((images, size, size, channels), jnp.float32)
    labels = jax.ShapeDtypeStruct((images,), jnp.int32)
    rng = jax.ShapeDtypeStruct((2,), jnp.uint32)

    def init(x):
        keys = {base_layer.PARAMS: jax.random.PRNGKey(0), base_layer.RANDOM: jax.random.PRNGKey(1)}
        return model.init(keys, x)[base_layer.PARAMS]

    params = jax.eval_shape(init, batch)

    def loss_of(params, images, labels, rng):  # as harness.runtime.steps' loss_and_metrics
        logits, collections = apply_model(model, params, images, rng)
        ce = jnp.mean(classification_loss(logits, labels, loss))
        return ce + sum(aux_losses_by_name(collections).values())

    found = ad_checkpoint.saved_residuals(loss_of, params, batch, labels, rng)
    return tuple(
        (tuple(aval.shape), aval.dtype.itemsize)
        for aval, source in found
        if not source.startswith("from the argument")
    )


@functools.lru_cache(maxsize=64)
def weight_partitions(spec: ModelSpec) -> tuple[tuple[tuple[int, ...], PartitionSpec], ...]:
    """Each weight's shape and the trainer's partition spec for it (no FSDP)."""
    weights = Weights.of_variables(
        params_flops.abstract_variables(builders.build_model(spec), spec)
    )
    shapes = jax.tree_util.tree_leaves(weights.shapes)
    specs = jax.tree_util.tree_structure(weights.shapes).flatten_up_to(weights.partition)
    return tuple((tuple(s.shape), p) for s, p in zip(shapes, specs, strict=True))


def model_split_dims(spec: ModelSpec) -> set[int]:
    """Sizes of the dimensions the 'model' axis splits (heads, MLP and expert MLP widths)."""
    dims = {spec.vit.num_heads, spec.vit.mlp_dims}
    if spec.moe.expert_mlp_dims:
        dims.add(spec.moe.expert_mlp_dims)
    return dims
