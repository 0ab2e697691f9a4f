"""Sparse upcycling (Komatsuzaki et al., ICLR 2023): a V-MoE started from a trained dense ViT.

Every weight of the dense checkpoint is copied by path, except each MoE block's MLP: its
kernels and biases ([D, H], [H], [H, D], [D]) are tiled into the E experts ([E, D, H], ...),
so at step 0 every expert is the dense MLP. The router has no dense counterpart and keeps the
sparse model's own initialisation (the trainer's, seeded by TrainSpec.seed), as vmoe's
`initialize_from_vit` does: its rules tile the MLP ('expand_tile', 0, E) and leave every
target leaf without a source (the router) at its fresh value.

When the upcycled model computes what the dense one did: each token's output in an MoE block
is sum_e combine[e] * MLP(x) = (sum_e combine[e]) * MLP(x), since the experts are identical.
V-MoE's combine weights are the selected softmax gates, not renormalised, so this is the
dense block exactly when the weights a token receives sum to 1, i.e.

- top_k routing with k = E (all gates kept, softmax sums to 1) and no token dropped, which
  capacity ceil(k * S * C / E) >= S guarantees for C >= 1 (BPR then changes nothing);
- expert_choice with capacity covering the group (k * C >= E): every expert takes every
  token and the token's softmax over experts sums to 1.

With k < E the block gives s(x) * MLP(x), s(x) = the sum of the token's top-k gates < 1 (k/E
under a near-uniform fresh router), so logits differ from the dense model's at step 0; the
paper trains on from there. Soft MoE mixes tokens into slots before the (nonlinear) experts,
so it never reproduces the dense block. tests/test_upcycle.py checks both sides.

WideNet shares one MoE across all blocks, which a dense ViT's per-block MLPs cannot fill;
that, and an expert shape that is not the dense MLP's, is refused in one line.
"""

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from harness.errors import UsageError

# An MoE block's expert leaves and the dense MLP leaf each is tiled from, in the same block.
EXPERT_SOURCES = {
    "wi": "ffn_layer1/linear/w",
    "bi": "ffn_layer1/bias/b",
    "wo": "ffn_layer2/linear/w",
    "bo": "ffn_layer2/bias/b",
}
# Per-block MoE leaves (V-MoE's MoeFeedForward in a praxis block): '<block>/ff_layer/moe/<leaf>'.
_BLOCK_MOE_LEAF = re.compile(r"^(?P<block>.+/ff_layer)/moe/(?P<leaf>[^/]+)$")
_MOE_SEGMENT = "/moe/"

# Given our param paths, returns their fresh initial values (the trainer's init for its seed).
FreshInit = Callable[[Sequence[str]], Mapping[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Upcycled:
    """The checkpoint's tensors under the sparse model's paths, and how each leaf was made."""

    tensors: dict[str, np.ndarray]
    copied: list[str]
    tiled: dict[str, str]  # expert leaf -> the dense leaf tiled into it
    fresh: list[str]
    num_experts: int


def _is_moe(path: str) -> bool:
    return _MOE_SEGMENT in f"/{path}"


def is_dense_to_sparse(tensors: Mapping[str, object], wanted: Mapping[str, object]) -> bool:
    """True when the model has MoE leaves and the checkpoint none: a dense one to upcycle."""
    return any(map(_is_moe, wanted)) and not any(map(_is_moe, tensors))


def upcycle(
    tensors: Mapping[str, np.ndarray],
    wanted: Mapping[str, object],
    fresh_init: FreshInit,
    *,
    checkpoint: str,
) -> Upcycled:
    """Maps a dense checkpoint's flat tensors onto the sparse model's flat paths.

    Args:
      tensors: The dense checkpoint's tensors under our dense paths (what the importers give).
      wanted: The sparse model's flat params (only shapes are used), head included or not.
      fresh_init: Fresh values for the leaves with no dense source (routers).
      checkpoint: The checkpoint's path, for messages.

    Returns:
      Upcycled: tensors for every MoE leaf plus the checkpoint's other tensors (left for the
      caller's strict fill, which names anything else that does not fit).

    Raises:
      UsageError: One line for a shared (WideNet) MoE or an expert the dense MLP cannot fill.
    """
    out = dict(tensors)
    tiled: dict[str, str] = {}
    fresh: list[str] = []
    num_experts = 0
    for path in sorted(p for p in wanted if _is_moe(p)):
        match = _BLOCK_MOE_LEAF.match(path)
        if match is None:
            raise UsageError(
                f"cannot upcycle {checkpoint}: the model's {path} is one MoE shared across "
                "blocks (WideNet), which a dense ViT's per-block MLPs cannot fill; upcycle into "
                "ModelSpec.family='vmoe'"
            )
        leaf = match["leaf"]
        if leaf not in EXPERT_SOURCES:
            fresh.append(path)
            continue
        source = f"{match['block']}/{EXPERT_SOURCES[leaf]}"
        target_shape = tuple(np.shape(wanted[path]))
        if source not in out:
            raise UsageError(
                f"cannot upcycle {checkpoint}: the experts {path} {list(target_shape)} are tiled "
                f"from the dense MLP {source}, which the checkpoint lacks; give a dense ViT of "
                "the same depth"
            )
        dense = np.asarray(out.pop(source))
        if target_shape[1:] != dense.shape:
            raise UsageError(
                f"cannot upcycle {checkpoint}: experts {path} {list(target_shape)} cannot be "
                f"tiled from the dense MLP {source} {list(dense.shape)}; give the model the "
                "checkpoint's widths (VitSpec.model_dims, MoeSpec.expert_mlp_dims=None)"
            )
        num_experts = target_shape[0]
        out[path] = np.repeat(dense[None], num_experts, axis=0)
        tiled[path] = source
    fresh_values = fresh_init(fresh) if fresh else {}
    out.update({path: np.asarray(fresh_values[path]) for path in fresh})
    copied = sorted(p for p in out if p in wanted and p not in tiled and p not in fresh)
    return Upcycled(out, copied, tiled, fresh, num_experts)


def _blocks(paths: Sequence[str]) -> str:
    """'encoder/x_layers_1/ff_layer, encoder/x_layers_3/ff_layer' from leaves in those blocks."""
    return ", ".join(sorted({_BLOCK_MOE_LEAF.match(p)["block"] for p in paths}))


def summary(upcycled: Upcycled, checkpoint: str, head: str) -> str:
    """One line naming what was copied, tiled and freshly initialised."""
    fresh = sorted({p.rsplit("/", 1)[1] for p in upcycled.fresh})
    return (
        f"Upcycled {checkpoint}: copied {len(upcycled.copied)} tensors; tiled "
        f"{len(upcycled.tiled)} dense MLP tensors into {upcycled.num_experts} identical experts "
        f"in {_blocks(list(upcycled.tiled))}; freshly initialised {len(upcycled.fresh)} "
        f"(moe/{','.join(fresh)}); head {head}"
    )


def record(upcycled: Upcycled) -> dict[str, object]:
    """JSON for init_from.json: every leaf's origin, so a run says how it was started."""
    return {
        "num_experts": upcycled.num_experts,
        "copied": upcycled.copied,
        "tiled": dict(sorted(upcycled.tiled.items())),
        "fresh": sorted(upcycled.fresh),
    }
