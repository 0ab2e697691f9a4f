r"""Forward+backward time of one MoE FFN block against the FLOP-matched dense MLP block.

  .venv/bin/python bench/moe_layer.py [--experts=4,8,16,32,64] [--dims=256,512] [--ks=1,2]
      [--tokens=4096] [--group_size=1024] [--capacity_factor=1.0] [--repeats=5]

Every layer is a full pre-LN FFN block (LayerNorm, MLP or MoE, residual), timed in this one
process on the same inputs, one after another, as the median of `repeats` jit-compiled
value_and_grad calls (params and inputs) after one warm-up call. Layers:

  dense     praxis TransformerFeedForward, hidden k*H: the same per-token FLOPs as the MoE
            at C=1 (k experts of hidden H each), and the reference every ratio divides by.
  einsum    our MoeFeedForward, one-hot einsum dispatch.
  gather    our MoeFeedForward, index (gather/scatter) dispatch.
  gshard    praxis TransformerFeedForwardMoe (GShard top-2; k=2 rows only), with the same
            groups and per-expert capacity as ours.

H = 4D (the ViT ratio). Tokens are routed in groups of --group_size (capacity per group).
"""

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

# Run as a script from anywhere: the project's packages live one folder up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
from praxis import base_layer, pax_fiddle
from praxis.layers import transformers

from models.moe import routing
from models.moe.layers import MoeFeedForward, SparseMoe
from models.specs import MoeSpec

LAYERS = ("dense", "einsum", "gather", "gshard")
ROW_TOKENS = 256  # tokens per input row; --group_size must be a multiple of it


def _dense(d: int, hidden: int) -> pax_fiddle.Config:
    return pax_fiddle.Config(
        transformers.TransformerFeedForward, name="dense", input_dims=d, hidden_dims=hidden
    )


def _ours(d: int, h: int, e: int, k: int, c: float, group: int, dispatch: str):
    routing = MoeSpec(
        num_experts=e,
        num_selected_experts=k,
        capacity_factor=c,
        # Inputs are rows of ROW_TOKENS tokens ("images"); groups are whole rows.
        group_images=group // ROW_TOKENS,
        dispatch=dispatch,
    )
    moe = pax_fiddle.Config(SparseMoe, spec=routing)
    return pax_fiddle.Config(
        MoeFeedForward, name=dispatch, input_dims=d, hidden_dims=h, num_experts=e, moe_tpl=moe
    )


def _gshard(d: int, h: int, e: int, capacity: int, groups: int) -> pax_fiddle.Config:
    return pax_fiddle.Config(
        transformers.TransformerFeedForwardMoe,
        name="gshard",
        input_dims=d,
        hidden_dims=h,
        num_experts=e,
        num_groups=groups,
        expert_capacity_dim=capacity,
        unadjusted_expert_capacity_factor=0.0,
    )


def _step(config: pax_fiddle.Config, x: jax.Array) -> Callable[[], Any]:
    layer = base_layer.instantiate(config)
    rngs = {base_layer.PARAMS: jax.random.PRNGKey(0), base_layer.RANDOM: jax.random.PRNGKey(1)}
    params = layer.init(rngs, x)[base_layer.PARAMS]

    def loss(p, inputs):
        y, _ = layer.apply(
            {base_layer.PARAMS: p},
            inputs,
            rngs={base_layer.RANDOM: jax.random.PRNGKey(2)},
            mutable=True,
        )
        return jnp.mean(jnp.square(y))

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    return lambda: jax.block_until_ready(grad(params, x))


def _median_ms(step: Callable[[], Any], repeats: int) -> float:
    step()  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--experts", default="4,8,16,32,64")
    parser.add_argument("--dims", default="256,512")
    parser.add_argument("--ks", default="1,2")
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--group_size", type=int, default=1024)
    parser.add_argument("--capacity_factor", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n, group, c = args.tokens, args.group_size, args.capacity_factor
    device = jax.devices()[0]
    print(
        f"{n} tokens in groups of {group}, C={c}, H=4D, fp32, fwd+bwd median of "
        f"{args.repeats}; {device.platform} {device.device_kind}, {jax.device_count()} "
        f"device(s), {platform.processor() or platform.machine()}, jax {jax.__version__}"
    )
    print()
    print(
        "| D | k | E | Cap | dense ms | einsum ms | gather ms | gshard ms "
        "| einsum/dense | gather/dense | gshard/dense | best/gshard |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for d in map(int, args.dims.split(",")):
        x = jax.random.normal(jax.random.PRNGKey(3), (n // ROW_TOKENS, ROW_TOKENS, d))
        for k in map(int, args.ks.split(",")):
            h = 4 * d
            dense_ms = _median_ms(_step(_dense(d, k * h), x), args.repeats)
            for e in map(int, args.experts.split(",")):
                capacity = routing.expert_capacity(group, e, k, c)
                ms = {"dense": dense_ms}
                for dispatch in ("einsum", "gather"):
                    ms[dispatch] = _median_ms(
                        _step(_ours(d, h, e, k, c, group, dispatch), x), args.repeats
                    )
                if k == 2:
                    ms["gshard"] = _median_ms(
                        _step(_gshard(d, h, e, capacity, n // group), x), args.repeats
                    )
                best = min(ms["einsum"], ms["gather"])
                cells = [_cell(ms.get(name), ".1f") for name in LAYERS]
                ratios = [_cell(ms[n] / dense_ms if n in ms else None, ".2f") for n in LAYERS[1:]]
                versus_gshard = _cell(best / ms["gshard"] if "gshard" in ms else None, ".2f")
                print(
                    f"| {d} | {k} | {e} | {capacity} | "
                    + " | ".join(cells + ratios)
                    + f" | {versus_gshard} |",
                    flush=True,
                )


def _cell(value: float | None, spec: str) -> str:
    """GShard in praxis is top-2 only, so its k=1 cells are n/a."""
    return "n/a" if value is None else format(value, spec)


if __name__ == "__main__":
    main()
