"""The one collection through which layers report diagnostics to the trainer and the report.

Layers `sow` into STATS (routing statistics, attention diagnostics); the trainer applies the
model with `mutable=[STATS, base_layer.AUX_LOSS]` and reads them back keyed by layer path.
Each call appends to a tuple, so a layer called several times (WideNet's shared MoE) reports
once per call, in call order.
"""

import re
from typing import Any

import jax
from praxis import base_layer

STATS = "stats"

# Routing statistics every MoE layer sows (models/moe/layers.py), as they appear in metric
# names; harness/measure/routing_health.py defines what they mean for routing health.
LOAD = "expert_load"
ROUTER_ENTROPY = "router_entropy"
EXPERT_CHOICE_SPREAD = "expert_choice_spread"
SLOT_DISPATCH_ENTROPY = "slot_dispatch_entropy"
DROPPED = "dropped_fraction"
UNROUTED = "unrouted_fraction"
# Scalars per layer the train and eval steps report besides dropped and unrouted.
HEALTH_SCALARS = (ROUTER_ENTROPY, EXPERT_CHOICE_SPREAD, SLOT_DISPATCH_ENTROPY)


def sow_stat(layer: base_layer.BaseLayer, name: str, value: jax.Array) -> None:
    """Records `value` under `name` in the STATS collection at the layer's path."""
    layer.sow(STATS, name, value)


def flatten_stats(stats: Any, prefix: str = "") -> dict[str, jax.Array]:
    """Flattens a STATS tree into {'path/to/layer/name': value}, one entry per call.

    A value sown once keeps its name; a value sown n > 1 times becomes `name/0`...`name/n-1`.
    """
    flat: dict[str, jax.Array] = {}
    for key, value in stats.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten_stats(value, path))
        elif isinstance(value, tuple) and len(value) == 1:
            flat[path] = value[0]
        elif isinstance(value, tuple):
            flat.update({f"{path}/{i}": v for i, v in enumerate(value)})
        else:
            flat[path] = value
    return flat


_BLOCK_IN_PATH = re.compile(r"x_layers_(\d+)/")
_CALL_SUFFIX = re.compile(r"/(\d+)$")


def per_block(stats: Any, name: str) -> dict[str, jax.Array]:
    """Values of stat `name` keyed 'block_NN' by the transformer block that produced them.

    A V-MoE reports from the MoE layer inside block NN (path '.../x_layers_NN/...'); WideNet's
    shared MoE reports once per block, in block order, so the call index is the block.
    """
    result: dict[str, jax.Array] = {}
    for path, value in flatten_stats(stats).items():
        call = _CALL_SUFFIX.search(path)
        base = path[: call.start()] if call else path
        if base.rsplit("/", 1)[-1] != name:
            continue
        block = _BLOCK_IN_PATH.search(base + "/")
        index = int(block.group(1)) if block else int(call.group(1)) if call else 0
        result[f"block_{index:02d}"] = value
    return result
