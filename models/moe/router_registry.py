"""Every MoE router by name: where its code is, which MoeSpec fields it reads, and how many
expert MLP passes a token costs under it (for FLOPs).

Pure Python, so specs can check `MoeSpec.router` while gin parses, with no JAX loaded. A
router's code is a module with two functions, imported when a layer is built:
  create_weights(layer: SparseMoe) -> None        its router weights, via layer._weight(...)
  route(layer: SparseMoe, x [G, S, D]) -> (outputs [G, S, D], RoutingReport)
`route` may use the layer's shared machinery (router logits, dispatch, aux losses). Adding a
router is one new module and one `register` call (tests/test_router_registry.py adds one). The
three built-in routers share that machinery most, so their code stays in
models/moe/layers.py, behind the same two functions.
"""

import dataclasses
import importlib
import math
from collections.abc import Callable
from typing import Any

# Fields every router reads; `uses` lists the ones beyond these.
COMMON_FIELDS = ("num_experts", "group_images", "placement", "expert_mlp_dims", "dispatch")


@dataclasses.dataclass(frozen=True)
class RouterEntry:
    """module: where its `create_weights` and `route` live (`prefix`: their names there are
      `{prefix}create_weights` and `{prefix}route`).
    uses: the MoeSpec fields it reads besides COMMON_FIELDS (a routing sweep varies k and C
      only for a router that uses them, and BPR only for one that uses batch_priority).
    expert_passes: (spec, tokens per routing group) -> expert MLPs evaluated per token at
      inference, on average.
    router_macs_per_token: (spec) -> multiply-accumulates of the router per token and model
      dimension (E for a [D, E] router)."""

    module: str
    uses: tuple[str, ...]
    expert_passes: Callable[[Any, int], float]
    router_macs_per_token: Callable[[Any], float] = lambda spec: spec.num_experts
    prefix: str = ""

    def functions(self) -> tuple[Callable[..., Any], Callable[..., Any]]:
        """(create_weights, route), imported now: the module may load JAX and praxis."""
        module = importlib.import_module(self.module)
        return (
            getattr(module, f"{self.prefix}create_weights"),
            getattr(module, f"{self.prefix}route"),
        )


ROUTERS: dict[str, RouterEntry] = {}


def register(name: str, entry: RouterEntry) -> None:
    """Makes `name` a valid MoeSpec.router."""
    ROUTERS[name] = entry


def _expert_choice_passes(spec: Any, group_tokens: int) -> float:
    wanted = spec.inference_k * group_tokens * spec.inference_capacity_factor / spec.num_experts
    capacity = min(max(1, math.ceil(wanted - 1e-9)), group_tokens)
    return spec.num_experts * capacity / group_tokens


register(
    "top_k",
    RouterEntry(
        "models.moe.layers",
        uses=(
            "num_selected_experts",
            "capacity_factor",
            "batch_priority",
            "noise_std",
            "aux_loss",
            "eval_num_selected_experts",
            "eval_capacity_factor",
            "eval_batch_priority",
        ),
        expert_passes=lambda spec, group_tokens: spec.inference_k,
        prefix="top_k_",
    ),
)
register(
    "expert_choice",
    RouterEntry(
        "models.moe.layers",
        uses=(
            "num_selected_experts",
            "capacity_factor",
            "noise_std",
            "eval_num_selected_experts",
            "eval_capacity_factor",
        ),
        expert_passes=_expert_choice_passes,
        prefix="expert_choice_",
    ),
)
register(
    "soft",
    RouterEntry(
        "models.moe.layers",
        uses=("slots_per_expert",),
        expert_passes=lambda spec, group_tokens: (
            spec.num_experts * spec.slots_per_expert / group_tokens
        ),
        # Dispatch logits, their softmax over tokens and the combine softmax over slots.
        router_macs_per_token=lambda spec: 3 * spec.num_experts * spec.slots_per_expert,
        prefix="soft_",
    ),
)
