"""Routing health of every MoE layer: load per expert, dead experts, router entropy, dropped
tokens, the router-specific collapse signals, and the rule that calls a layer collapsed.

The MoE layers sow the raw statistics (models/moe/layers.py); the train step averages them
over its micro-batches and the trainer over the steps between two logs; this module turns the
logged values into per-layer health, TensorBoard scalars, the one-line collapse warning and
results.json's "routing_health". Definitions (E experts in the layer):

- load: each expert's share of the layer's routing mass, summing to 1. top_k: its share of the
  tokens' top-k choices before capacity (a choice dropped by capacity still shows the router's
  preference); expert_choice: its share of the tokens taken, 1/E by construction; soft: its
  share of the tokens' combine weights.
- dead expert: mean load share over the last WINDOW_LOGS logged steps below
  DEAD_SHARE_OF_UNIFORM / E, a tenth of the uniform share. One logged interval alone is too
  noisy at small batches; a window of logs is what "has stopped receiving tokens" means.
- router entropy: the mean over tokens of the entropy (nats) of each token's router
  distribution over experts, also divided by log E (1 = every token undecided, 0 = every token
  certain). Low per-token entropy is also what a confident, balanced router has, so it is
  reported, not used to call collapse: collapse is about where the tokens go.
- load entropy: the entropy of the window's mean load, divided by log E (1 = uniform).
- dropped fraction: top_k: the share of the k * tokens assignments past capacity (vanilla or
  BPR is which router config ran); expert_choice: the share of tokens no expert took; soft: 0.
- expert_choice spread: 0 when every expert took the same tokens, 1 when their picks are
  disjoint (models/moe/expert_choice.py::selection_spread). Expert choice cannot have dead
  experts (each fills its capacity); experts that all want the same tokens are its collapse.
- soft slot dispatch entropy: mean over slots of the entropy of the slot's dispatch weights
  over its group's tokens, divided by log S (1 = each slot is its group's plain average).
  A fresh Soft MoE starts near 1 (its logits are cosine similarities times a scale of 1), so
  it is reported as the slots' specialisation, not thresholded; Soft MoE's collapse is its
  combine mass (load) concentrating on few experts, caught by the dead-expert rule.

A layer is collapsed when, over the window, at least COLLAPSE_DEAD_SHARE of its experts are
dead, or its load entropy is below COLLAPSE_LOAD_ENTROPY (one expert taking ~90% of the mass
among 8 gives 0.25 without any expert being dead), or, for expert choice, its spread is below
COLLAPSE_EXPERT_CHOICE_SPREAD (independent random picks give 0.5 to 0.6).
"""

import collections
import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from models.specs import MoeSpec
from models.stats import (
    DROPPED,
    HEALTH_SCALARS,
    LOAD,
    UNROUTED,
)

DEAD_SHARE_OF_UNIFORM = 0.1
WINDOW_LOGS = 5
COLLAPSE_DEAD_SHARE = 0.5
COLLAPSE_LOAD_ENTROPY = 0.3
COLLAPSE_EXPERT_CHOICE_SPREAD = 0.25

# The stat names the MoE layers sow are models/stats.py's (the train step reads them too).
LAYER_SCALARS = (DROPPED, UNROUTED, *HEALTH_SCALARS)
TENSORBOARD_PREFIX = "routing"


def thresholds() -> dict[str, Any]:
    """The rule's constants, as results.json states them next to the numbers."""
    return {
        "dead_share_of_uniform": DEAD_SHARE_OF_UNIFORM,
        "window_logged_steps": WINDOW_LOGS,
        "collapse_dead_share": COLLAPSE_DEAD_SHARE,
        "collapse_load_entropy": COLLAPSE_LOAD_ENTROPY,
        "collapse_expert_choice_spread": COLLAPSE_EXPERT_CHOICE_SPREAD,
    }


def describe_router(moe: MoeSpec, evaluation: bool) -> str:
    """The routing that produced the numbers, e.g. 'top_k k=2 C=1.05 BPR': whether dropped
    tokens were dropped by vanilla or by Batch Prioritized Routing is which one ran."""
    if moe.router == "soft":
        return f"soft, {moe.slots_per_expert} slot(s) per expert"
    k, capacity, bpr = moe.num_selected_experts, moe.capacity_factor, moe.batch_priority
    if evaluation:
        k = k if moe.eval_num_selected_experts is None else moe.eval_num_selected_experts
        capacity = capacity if moe.eval_capacity_factor is None else moe.eval_capacity_factor
        bpr = bpr if moe.eval_batch_priority is None else moe.eval_batch_priority
    if moe.router == "expert_choice":
        return f"expert_choice k={k} C={capacity}"
    return f"top_k k={k} C={capacity} {'BPR' if bpr else 'vanilla'}"


def entropy(probabilities: Iterable[float]) -> float:
    """Entropy in nats of a distribution (0 log 0 = 0)."""
    p = np.asarray(list(probabilities), np.float64)
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


def normalised(nats: float, outcomes: int) -> float:
    """Entropy divided by its maximum log(outcomes); 1.0 for a single outcome."""
    return nats / math.log(outcomes) if outcomes > 1 else 1.0


def dead_threshold(num_experts: int) -> float:
    return DEAD_SHARE_OF_UNIFORM / num_experts


def dead_experts(load: Iterable[float]) -> list[int]:
    """Experts whose (window-mean) load share is below the dead threshold."""
    shares = np.asarray(list(load), np.float64)
    return [int(e) for e in np.flatnonzero(shares < dead_threshold(len(shares)))]


@dataclasses.dataclass(frozen=True)
class LayerHealth:
    """One MoE layer's health over a window of logged steps, or over an evaluation pass."""

    load: list[float]
    router_entropy: float | None = None
    dropped_fraction: float | None = None
    unrouted_fraction: float | None = None
    expert_choice_spread: float | None = None
    slot_dispatch_entropy: float | None = None

    @property
    def num_experts(self) -> int:
        return len(self.load)

    @property
    def dead_experts(self) -> list[int]:
        return dead_experts(self.load)

    @property
    def load_entropy(self) -> float:
        return normalised(entropy(self.load), self.num_experts)

    @property
    def router_entropy_normalised(self) -> float | None:
        if self.router_entropy is None:
            return None
        return normalised(self.router_entropy, self.num_experts)

    def collapse(self) -> str | None:
        """Why the layer counts as collapsed, in words, or None when it does not."""
        dead = self.dead_experts
        if self.num_experts > 1 and len(dead) >= COLLAPSE_DEAD_SHARE * self.num_experts:
            return (
                f"{len(dead)} of {self.num_experts} experts dead "
                f"(load share < {dead_threshold(self.num_experts):.3g})"
            )
        if self.num_experts > 1 and self.load_entropy < COLLAPSE_LOAD_ENTROPY:
            return (
                f"load entropy {self.load_entropy:.3f} < {COLLAPSE_LOAD_ENTROPY} "
                f"(largest expert share {max(self.load):.3f})"
            )
        spread = self.expert_choice_spread
        if spread is not None and spread < COLLAPSE_EXPERT_CHOICE_SPREAD:
            return (
                f"expert choice spread {spread:.3f} < {COLLAPSE_EXPERT_CHOICE_SPREAD} "
                "(the experts pick the same tokens)"
            )
        return None

    def to_json(self) -> dict[str, Any]:
        optional = {
            "router_entropy": self.router_entropy,
            "router_entropy_normalised": self.router_entropy_normalised,
            "dropped_fraction": self.dropped_fraction,
            "unrouted_fraction": self.unrouted_fraction,
            "expert_choice_spread": self.expert_choice_spread,
            "slot_dispatch_entropy": self.slot_dispatch_entropy,
        }
        return {
            "load": [float(x) for x in self.load],
            "dead_experts": self.dead_experts,
            "load_entropy": self.load_entropy,
            **{k: float(v) for k, v in optional.items() if v is not None},
            "collapse": self.collapse(),
        }

    def tensorboard_scalars(self, block: str) -> dict[str, float]:
        """routing/<block>/... scalars; per-expert load as scalars so runs overlay."""
        tag = f"{TENSORBOARD_PREFIX}/{block}"
        scalars = {
            f"{tag}/load_max": max(self.load),
            f"{tag}/load_entropy": self.load_entropy,
            f"{tag}/dead_experts": float(len(self.dead_experts)),
            f"{tag}/collapsed": float(self.collapse() is not None),
            **{f"{tag}/load/expert_{e:02d}": float(x) for e, x in enumerate(self.load)},
        }
        named = {
            "entropy": self.router_entropy_normalised,
            "entropy_nats": self.router_entropy,
            "dropped_fraction": self.dropped_fraction,
            "unrouted_fraction": self.unrouted_fraction,
            "expert_choice_spread": self.expert_choice_spread,
            "slot_dispatch_entropy": self.slot_dispatch_entropy,
        }
        scalars.update({f"{tag}/{k}": float(v) for k, v in named.items() if v is not None})
        return scalars


def warning_line(block: str, reason: str, where: str) -> str:
    """The one line the progress output prints when a layer collapses."""
    return f"warning: routing collapse in {block}: {reason} ({where})"


def _layer_values(metrics: Mapping[str, Any], prefix: str) -> dict[str, dict[str, Any]]:
    """{block: {stat name: value}} from metrics named '<prefix>/<stat>/<block>'."""
    layers: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        if not key.startswith(prefix + "/"):
            continue
        name, _, block = key[len(prefix) + 1 :].rpartition("/")
        if name in (LOAD, *LAYER_SCALARS):
            layers.setdefault(block, {})[name] = value
    return layers


def _health(load: Iterable[float], values: Mapping[str, Any]) -> LayerHealth:
    def scalar(name: str) -> float | None:
        return float(values[name]) if name in values else None

    return LayerHealth(load=[float(x) for x in load], **{n: scalar(n) for n in LAYER_SCALARS})


def pop_train_vectors(scalars: dict[str, Any], prefix: str) -> dict[str, np.ndarray]:
    """Takes the per-expert load vectors out of logged train metrics (they are no scalars
    for TensorBoard or the progress line); {block: load}."""
    loads = {}
    for key in [k for k in scalars if k.startswith(f"{prefix}/{LOAD}/")]:
        loads[key.rsplit("/", 1)[1]] = np.asarray(scalars.pop(key), np.float64)
    return loads


class HealthTracker:
    """Routing health over training: fed each logged interval's metrics, it keeps the last
    WINDOW_LOGS loads per layer, says once per layer when it collapses, and summarises."""

    def __init__(self, prefix: str = "train/routing") -> None:
        self.prefix = prefix
        self._loads: dict[str, collections.deque] = {}
        self._latest: dict[str, LayerHealth] = {}
        self._steps: collections.deque = collections.deque(maxlen=WINDOW_LOGS)
        self.first_collapse_step: dict[str, int] = {}

    def observe(self, step: int, scalars: dict[str, Any]) -> tuple[dict[str, float], list[str]]:
        """Pops the load vectors and health scalars out of `scalars` (a logged interval's
        means); returns the TensorBoard scalars and the warnings for newly collapsed layers."""
        loads = pop_train_vectors(scalars, self.prefix)
        if not loads:
            return {}, []
        values = _layer_values(scalars, self.prefix)
        for block in values:
            for name in HEALTH_SCALARS:
                scalars.pop(f"{self.prefix}/{name}/{block}", None)
        self._steps.append(step)
        written: dict[str, float] = {}
        warnings = []
        for block, load in sorted(loads.items()):
            window = self._loads.setdefault(block, collections.deque(maxlen=WINDOW_LOGS))
            window.append(load)
            health = _health(np.mean(np.stack(window), axis=0), values.get(block, {}))
            self._latest[block] = health
            written.update(health.tensorboard_scalars(block))
            reason = health.collapse()
            if reason is not None and block not in self.first_collapse_step:
                self.first_collapse_step[block] = step
                warnings.append(warning_line(block, reason, f"at step {step}"))
        return written, warnings

    def summary(self, router: str) -> dict[str, Any]:
        """results.json's "routing_health" for training (`router`: describe_router's words);
        {} for a model without MoE layers. Loads are the window's mean; the other values
        are the last logged interval's."""
        if not self._latest:
            return {}
        steps = list(self._steps)
        return {
            "source": f"training, mean load over logged steps {steps[0]}..{steps[-1]}",
            "router": router,
            "thresholds": thresholds(),
            "layers": {b: h.to_json() for b, h in sorted(self._latest.items())},
            "first_collapse_step": dict(sorted(self.first_collapse_step.items())),
        }


def from_evaluation(
    metrics: Mapping[str, float],
    loads: Mapping[str, Iterable[float]],
    router: str,
    prefix: str = "eval/routing",
) -> tuple[dict[str, Any], dict[str, LayerHealth]]:
    """results.json's "routing_health" over one evaluation pass (the window is the pass), and
    the per-layer health; `loads` is each block's load share on the evaluation data."""
    values = _layer_values(metrics, prefix)
    layers = {block: _health(load, values.get(block, {})) for block, load in sorted(loads.items())}
    if not layers:
        return {}, {}
    section = {
        "source": "evaluation data",
        "router": router,
        "thresholds": thresholds(),
        "layers": {b: h.to_json() for b, h in layers.items()},
    }
    return section, layers
