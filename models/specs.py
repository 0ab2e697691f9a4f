"""The gin-configured specs of a model, and the typed base every spec in the project shares.

Everything gin can bind is a frozen dataclass here (or in harness/*/spec*.py) whose fields are
checked against their type hints and ranges when it is built, so a bad binding fails with one
line naming it, before anything is compiled or written. This module imports no JAX or praxis:
parsing a gin file, and every CLI's usage errors, stay fast.

gin passes bindings through untyped, so without the type check `VitSpec.model_dims='wide'`
would fail deep inside a layer with a message about string formatting.
"""

import dataclasses
import types
import typing
from typing import Any

import gin


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
