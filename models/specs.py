"""The gin-configured specs of a model, and the typed base every spec in the project shares.

Everything gin can bind is a frozen dataclass here (or in harness/*/spec*.py) whose fields are
checked against their type hints and ranges when it is built, so a bad binding fails with one
line naming it, before anything is compiled or written. This module imports no JAX or praxis:
parsing a gin file, and every CLI's usage errors, stay fast.

gin passes bindings through untyped, so without the type check `VitSpec.model_dims='wide'`
would fail deep inside a layer with a message about string formatting.
"""

import dataclasses
import math
import types
import typing
from typing import Any

import gin

from models.moe.router_registry import ROUTERS


class Spec:
    """Subclasses that define __post_init__ call super().__post_init__() first."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value, expected = getattr(self, field.name), hints[field.name]
            if not _matches(value, expected):
                raise ValueError(
                    f"{type(self).__name__}.{field.name}={value!r} has the wrong type; "
                    f"give {_describe(expected)}"
                )


def _matches(value: Any, expected: Any) -> bool:
    if expected is Any:
        return True
    if typing.get_origin(expected) in (typing.Union, types.UnionType):
        return any(_matches(value, option) for option in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if expected is float:  # an int is a fine float (gin reads `1` as an int)
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    origin = typing.get_origin(expected)
    return isinstance(value, origin or expected)


def _describe(expected: Any) -> str:
    if typing.get_origin(expected) in (typing.Union, types.UnionType):
        return " or ".join(_describe(option) for option in typing.get_args(expected))
    if expected is type(None):
        return "None"
    return f"a value of type {getattr(expected, '__name__', expected)}"


FAMILIES = ("vit", "vmoe", "widenet", "vit22b")
REMAT_POLICIES = ("none", "full", "dots_saveable")
MESH_AXES = ("data", "expert", "model")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class VitSpec(Spec):
    """Shape of the transformer and its input/output, and how its stack is compiled.

    remat: activation rematerialisation of each block in training: 'none' keeps every
      activation for the backward pass; 'full' keeps only each block's input and recomputes
      the rest (jax's nothing_saveable, big_vision's default when remat is on); 'dots_saveable'
      keeps the matmul outputs and recomputes the cheap elementwise ops in between.
    scan_layers: compile the stack's repeating unit once and scan it over the depth, so
      compile time does not grow with depth: one block (ViT, ViT-22B), V-MoE Every-n's
      dense+MoE pattern, V-MoE Last-n's dense prefix and dense+MoE suffix as two scans, and
      WideNet's shared block (praxis StackedTransformerRepeated; models/widenet.py). The
      math is the same; parameters then carry a leading depth axis, and
      models/scan_layout.py converts them to and from the per-block layout, so checkpoints
      of either layout import into a model of either.
    """

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
    remat: str = "none"
    scan_layers: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.remat not in REMAT_POLICIES:
            raise ValueError(
                f"VitSpec.remat={self.remat!r} is unknown; use one of {REMAT_POLICIES}"
            )
        for name in (
            "image_size", "patch_size", "num_channels", "num_classes",
            "model_dims", "num_layers", "mlp_dims", "num_heads",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"VitSpec.{name}={getattr(self, name)} must be >= 1")
        if not 0 <= self.dropout_prob < 1:
            raise ValueError(f"VitSpec.dropout_prob={self.dropout_prob} must be in [0, 1)")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MoeSpec(Spec):
    """Routing and expert settings (V-MoE, WideNet, Soft MoE). eval_* = None: as in training.

    Attributes:
      num_experts: E.
      num_selected_experts: k, experts per token (top_k); expert_choice sizes its buffers with
        it (capacity = ceil(k * group_tokens * C / E)); soft ignores it.
      capacity_factor: C (top_k, expert_choice); soft ignores it.
      eval_num_selected_experts, eval_capacity_factor, eval_batch_priority: inference values.
      batch_priority: Batch Prioritized Routing (top_k only).
      group_images: images per routing group. Capacity, BPR's ranking and Soft MoE's slots
        are per group, so with several images per group confident images keep more of their
        tokens (V-MoE's adaptive per-image compute). The reference routes groups of 8 images
        (group_size = 8 * tokens per image in google-research/vmoe's vmoe_paper configs). It
        must divide the batch each device sees.
      placement: which blocks get an MoE (see `moe_layer_indices`).
      expert_mlp_dims: expert MLP width; None = VitSpec.mlp_dims.
      aux_loss: 'vmoe' (importance + load, top_k) or 'switch' (WideNet); the expert_choice and
        soft routers balance by construction and add no aux loss.
      noise_std: std of the Gaussian added to the router logits in training, in absolute logit
        units; None = 1/E. (The reference's `noise_std` is a multiple of 1/E: its 1.0 is our
        None.) Used by top_k and expert_choice; soft adds no noise.
      dispatch: how tokens reach their experts. 'all_to_all': each device routes its own
        groups and all-to-alls the expert buffers over the 'expert' mesh axis and back
        (models/moe/expert_parallel.py), so nothing grows with the global batch; top_k fills
        the buffers by index. 'gather' (top_k by index) and 'einsum' (top_k by one-hot
        einsums) run the layer as one program over all groups and leave the partitioning to
        XLA, which gathers every device's tokens; expert_choice and soft treat both alike.
        'auto' = 'all_to_all' when the layer has a mesh of more than one device, else
        'gather'.
      router: 'top_k' (V-MoE tokens choose experts), 'expert_choice' (Zhou et al. 2022: experts
        choose tokens) or 'soft' (Puigcerver et al. 2023: slots mix all tokens of a group).
      slots_per_expert: p, slots per expert in each group (soft only).
    """

    num_experts: int = 32
    num_selected_experts: int = 2
    capacity_factor: float = 1.05
    eval_num_selected_experts: int | None = None
    eval_capacity_factor: float | None = None
    batch_priority: bool = False
    eval_batch_priority: bool | None = None
    group_images: int = 1
    placement: str = "every_2"
    expert_mlp_dims: int | None = None
    aux_loss: str = "vmoe"
    noise_std: float | None = None
    dispatch: str = "auto"
    router: str = "top_k"
    slots_per_expert: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_experts < 1:
            raise ValueError(f"MoeSpec.num_experts E={self.num_experts} must be >= 1")
        if self.expert_mlp_dims is not None and self.expert_mlp_dims < 1:
            raise ValueError(f"MoeSpec.expert_mlp_dims={self.expert_mlp_dims} must be >= 1 or None")
        # Signs and k <= E are checked by ModelSpec for sparse families (a dense config may
        # carry any MoeSpec); a float that is not finite would only fail deep inside a layer.
        for name in ("capacity_factor", "eval_capacity_factor", "noise_std"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"MoeSpec.{name}={value} must be finite")
        if self.router not in ROUTERS:
            raise ValueError(
                f"MoeSpec.router={self.router!r} is unknown; use one of {tuple(ROUTERS)} "
                "(models/moe/router_registry.py)"
            )
        if self.group_images < 1:
            raise ValueError(
                f"MoeSpec.group_images={self.group_images} must be >= 1; set the number of "
                "images per routing group (1 = each image alone)"
            )
        if self.slots_per_expert < 1:
            raise ValueError(
                f"MoeSpec.slots_per_expert={self.slots_per_expert} must be >= 1; give each "
                "expert at least one slot"
            )

    @property
    def inference_k(self) -> int:
        return self.eval_num_selected_experts or self.num_selected_experts

    @property
    def inference_capacity_factor(self) -> float:
        if self.eval_capacity_factor is None:
            return self.capacity_factor
        return self.eval_capacity_factor


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Vit22bSpec(Spec):
    """ViT-22B block switches, one ablation each.

    centered_norm: whether the block, QK and final norms subtract the mean (LayerNorm) or
    not (RMSNorm, the paper's "LayerNorm without bias and centering"); None = follow use_bias,
    so the paper block (use_bias=False) is uncentred and the biased ablation is a LayerNorm.
    """

    parallel: bool = True
    qk_norm: bool = True
    use_bias: bool = False
    fused: bool = True
    centered_norm: bool | None = None

    @property
    def norm_centered(self) -> bool:
        return self.use_bias if self.centered_norm is None else self.centered_norm


def moe_layer_indices(placement: str, num_layers: int) -> list[int]:
    """Blocks that get an MoE: 'every_n' = every n-th block counting from block n-1
    (every_2 -> 1, 3, 5, ...), 'last_n' = the last n odd-indexed blocks (V-MoE "Last-n"),
    'tail_n' = the last n blocks, all of them (Soft MoE replaces the second half: tail_6 of
    12 blocks)."""
    kind, _, count = placement.partition("_")
    if kind not in ("every", "last", "tail") or not count.isdigit() or int(count) < 1:
        raise ValueError(
            f"MoeSpec.placement={placement!r} is not understood; use 'every_N', 'last_N' or "
            "'tail_N' with N >= 1, e.g. 'every_2', 'last_5' or 'tail_6'"
        )
    n = int(count)
    if kind == "every":
        return list(range(n - 1, num_layers, n))
    candidates = list(range(1, num_layers, 2)) if kind == "last" else list(range(num_layers))
    if n > len(candidates):
        which = "odd-indexed blocks" if kind == "last" else "blocks"
        raise ValueError(
            f"MoeSpec.placement={placement!r} asks for {n} MoE blocks but the model has only "
            f"{len(candidates)} {which}; use {kind}_N with N <= {len(candidates)}"
        )
    return candidates[-n:]


def check_routing_config(num_experts: int, k: int, capacity_factor: float) -> None:
    """Raises ValueError (one line naming the bad value and the fix) for an impossible routing.

    Pure Python, so ModelSpec can check a sparse model's train and eval routing when gin builds
    it (before JAX loads); layers check again for the k and C a sweep sets at inference.
    """
    if num_experts < 1:
        raise ValueError(f"num_experts E={num_experts} must be >= 1; set E to a positive integer")
    if k < 1:
        raise ValueError(f"num_selected_experts k={k} must be >= 1; set 1 <= k <= E={num_experts}")
    if k > num_experts:
        raise ValueError(
            f"num_selected_experts k={k} exceeds num_experts E={num_experts}; set k <= E"
        )
    if not capacity_factor > 0:
        raise ValueError(f"capacity_factor C={capacity_factor} must be > 0; set C > 0 (e.g. 1.05)")


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
        if self.is_sparse:
            moe = self.moe
            eval_k, eval_c = moe.eval_num_selected_experts, moe.eval_capacity_factor
            check_routing_config(moe.num_experts, moe.num_selected_experts, moe.capacity_factor)
            check_routing_config(
                moe.num_experts,
                moe.num_selected_experts if eval_k is None else eval_k,
                moe.capacity_factor if eval_c is None else eval_c,
            )

    @property
    def is_sparse(self) -> bool:
        return self.family in ("vmoe", "widenet")

    @property
    def pooling(self) -> str:
        return "gap" if self.family == "vit22b" else self.vit.pooling

    @property
    def min_batch(self) -> int:
        """The smallest batch the model takes: one routing group of images if it is sparse."""
        return self.moe.group_images if self.is_sparse else 1

    @property
    def moe_layers(self) -> list[int]:
        """Indices of the blocks that route through an MoE (WideNet: every block)."""
        if self.family == "vmoe":
            return moe_layer_indices(self.moe.placement, self.vit.num_layers)
        if self.family == "widenet":
            return list(range(self.vit.num_layers))
        return []
