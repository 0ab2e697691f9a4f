"""The report's routing health of a run: one table row and one heatmap row per MoE layer.

results.json's "routing_health" (harness/measure/routing_health.py) comes from a run directory
someone else made: every value is type-checked and bounded here before it reaches a table or a
plot, and a malformed layer or section is skipped with a warning instead of failing the report.
"""

import math
import os
from typing import Any

from harness.measure import routing_health
from harness.reporting import plots
from harness.reporting.markdown import escape, table
from harness.reporting.runs import Run, warn

MAX_LAYERS = 512
MAX_EXPERTS = 4096
MAX_TEXT = 300
ROUNDING = 1e-6


class Malformed(ValueError):
    """A routing_health value that is not what the harness writes."""


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Malformed(f"{name} is {type(value).__name__}, not a number")
    if not (math.isfinite(value) and low <= value <= high):
        raise Malformed(f"{name}={value!r} is outside [{low}, {high}]")
    return float(value)


def _share(value: Any, name: str) -> float:
    """A value in [0, 1], allowing float32 rounding either side (a run computes 1 - 1.0 as
    -4e-9), clipped back into [0, 1]."""
    return min(max(_number(value, name, -ROUNDING, 1.0 + ROUNDING), 0.0), 1.0)


def _optional_share(layer: dict[str, Any], name: str) -> float | None:
    value = layer.get(name)
    return None if value is None else _share(value, name)


def _text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise Malformed(f"{name} is not a string of at most {MAX_TEXT} characters")
    return value


def _layer(layer: Any) -> dict[str, Any]:
    """A validated layer: load shares, dead experts, and the optional scalars."""
    if not isinstance(layer, dict):
        raise Malformed(f"the layer is {type(layer).__name__}, not an object")
    load = layer.get("load")
    if not isinstance(load, list) or not 1 <= len(load) <= MAX_EXPERTS:
        raise Malformed(f"load is not a list of 1 to {MAX_EXPERTS} shares")
    shares = [_share(x, "load share") for x in load]
    dead = layer.get("dead_experts", [])
    if not isinstance(dead, list) or len(dead) > len(shares):
        raise Malformed("dead_experts is not a list of expert indices")
    for e in dead:
        if isinstance(e, bool) or not isinstance(e, int) or not 0 <= e < len(shares):
            raise Malformed(f"dead expert {e!r} is not an expert index below {len(shares)}")
    return {
        "load": shares,
        "dead": dead,
        "load_entropy": _optional_share(layer, "load_entropy"),
        "router_entropy": _optional_share(layer, "router_entropy_normalised"),
        "dropped": _optional_share(layer, "dropped_fraction"),
        "unrouted": _optional_share(layer, "unrouted_fraction"),
        "spread": _optional_share(layer, "expert_choice_spread"),
        "dispatch": _optional_share(layer, "slot_dispatch_entropy"),
        "collapse": _text(layer.get("collapse"), "collapse"),
    }


def read_layers(run: Run) -> tuple[str, dict[str, dict[str, Any]]]:
    """(source, {block: validated layer}) of a run's routing health; ('', {}) when absent or
    unreadable, with one warning per thing skipped."""
    section = run.results.get("routing_health")
    if section is None:
        return "", {}
    try:
        if not isinstance(section, dict):
            raise Malformed(f"it is {type(section).__name__}, not an object")
        source = _text(section.get("source"), "source") or "unknown"
        router = _text(section.get("router"), "router")
        if router:
            source = f"{source} with {router}"
        layers = section.get("layers")
        if not isinstance(layers, dict) or not layers or len(layers) > MAX_LAYERS:
            raise Malformed(f"layers is not an object of 1 to {MAX_LAYERS} layers")
    except Malformed as error:
        warn(f"no routing health for {run.name}: results.json routing_health is malformed: {error}")
        return "", {}
    valid = {}
    for block, layer in layers.items():
        try:
            _text(block, "layer name")
            valid[block] = _layer(layer)
        except Malformed as error:
            warn(f"skipping routing health of {run.name} layer {str(block)[:80]!r}: {error}")
    return source, valid


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def routing_health_section(run: Run, plots_dir: str, rel: str) -> list[str]:
    """Markdown lines: the per-layer table and the load heatmap; [] without routing health."""
    source, layers = read_layers(run)
    if not layers:
        return []
    rows = []
    for block, layer in layers.items():
        other = (
            f"spread {_fmt(layer['spread'])}"
            if layer["spread"] is not None
            else f"dispatch entropy {_fmt(layer['dispatch'])}"
            if layer["dispatch"] is not None
            else ""
        )
        dead = layer["dead"]
        rows.append(
            (
                block,
                len(layer["load"]),
                _fmt(max(layer["load"])),
                f"{len(dead)}" + (f" ({', '.join(str(e) for e in dead[:16])})" if dead else ""),
                _fmt(layer["load_entropy"]),
                _fmt(layer["router_entropy"]),
                _fmt(layer["dropped"]),
                _fmt(layer["unrouted"]),
                other,
                layer["collapse"] or "no",
            )
        )
    header = (
        "layer",
        "experts",
        "max load",
        "dead experts",
        "load entropy",
        "router entropy",
        "dropped",
        "unrouted",
        "router's own",
        "collapsed",
    )
    filename = f"{run.name}_routing_health.png"
    plots.save(
        plots.load_heatmap(
            {block: layer["load"] for block, layer in layers.items()},
            {block: layer["dead"] for block, layer in layers.items()},
            f"{run.name}: load share per expert",
        ),
        os.path.join(plots_dir, filename),
    )
    return [
        f"### {escape(run.name)}: routing health per MoE layer",
        "",
        f"Measured on {escape(source)}. Load: each expert's share of the layer's routing mass; "
        f"dead: share below {routing_health.DEAD_SHARE_OF_UNIFORM}/E; entropies divided by "
        "log E (1 = uniform); collapsed: at least "
        f"{routing_health.COLLAPSE_DEAD_SHARE:.0%} of the experts dead, load entropy below "
        f"{routing_health.COLLAPSE_LOAD_ENTROPY}, or (expert choice) spread below "
        f"{routing_health.COLLAPSE_EXPERT_CHOICE_SPREAD}. Definitions: "
        "`harness/measure/routing_health.py`.",
        "",
        table(header, rows, align="lrrrrrrrll"),
        "",
        f"![load per expert per layer]({rel}/{filename})",
        "",
    ]
