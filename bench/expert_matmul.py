r"""The expert MLP alone against the FLOP-matched dense MLP: how much of the MoE layer's cost
over dense (bench/vs_reference.py's moe_vs_dense section) is the batched matmuls' shape.

  .venv/bin/python bench/expert_matmul.py [--experts=8,32,64] [--rounds=10] [--steps=5]

The section's shapes: 4 groups of 1024 tokens, D=256, H=1024, k=2, C=1. Each expert MLP runs
on its [E, groups x capacity, D] buffer (as models/moe/layers.py does after dispatch, with no
routing, dispatch or combine here); the dense MLP has hidden 2H on all 4096 tokens, so both do
the same FLOPs. fwd+bwd (gradients of weights and inputs), fp32, jitted; variants interleaved,
`steps` calls per round; ratio = experts / dense per round, median [min, max].
"""

import argparse
import math
import os
import statistics
import sys

# Run as a script from anywhere: the project's packages live one folder up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp

from bench.interleaved import ratio_cell, timed_rounds

DIMS, HIDDEN, GROUPS, GROUP_SIZE, TOP_K = 256, 1024, 4, 1024, 2


def dense_mlp(w1, b1, w2, b2, x):
    return jax.nn.gelu(x @ w1 + b1) @ w2 + b2


def expert_mlp(w1, b1, w2, b2, x):  # x: [E, rows, D]; weights stacked on E
    hidden = jax.nn.gelu(jnp.einsum("erd,edh->erh", x, w1) + b1[:, None])
    return jnp.einsum("erh,ehd->erd", hidden, w2) + b2[:, None]


def fwd_bwd(mlp, shapes: list[tuple[int, ...]], x_shape: tuple[int, ...]):
    """A jitted call of d(output . dy)/d(weights, x), on random weights and inputs."""
    key = jax.random.PRNGKey(0)
    weights = [0.02 * jax.random.normal(key, s) for s in shapes]
    x = jax.random.normal(key, x_shape)
    grad = jax.jit(jax.grad(lambda p, x, dy: jnp.vdot(mlp(*p, x), dy), argnums=(0, 1)))
    return lambda: grad(weights, x, x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experts", default="8,32,64")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    d, h = DIMS, HIDDEN
    calls = {"dense": fwd_bwd(dense_mlp, [(d, 2 * h), (2 * h,), (2 * h, d), (d,)], (4096, d))}
    for experts in map(int, args.experts.split(",")):
        rows = GROUPS * math.ceil(TOP_K * GROUP_SIZE / experts)
        shapes = [(experts, d, h), (experts, h), (experts, h, d), (experts, d)]
        calls[f"E={experts}, [{experts}, {rows}, {d}]"] = fwd_bwd(
            expert_mlp, shapes, (experts, rows, d)
        )
    for call in calls.values():
        jax.block_until_ready(call())  # compiles
    times = timed_rounds(calls, args.rounds, args.steps)
    device = jax.devices()[0]
    print(
        f"{device.platform} {device.device_kind}, jax {jax.__version__}, fp32, fwd+bwd; "
        f"{args.rounds} interleaved rounds x {args.steps} calls\n"
    )
    print("| expert MLP buffer | ms | / dense MLP (hidden 2H, 4096 tokens) |")
    print("|---|---:|---:|")
    for name in list(calls)[1:]:
        print(
            f"| {name} | {1000 * statistics.median(times[name]):.1f} | "
            f"{ratio_cell(times, name, 'dense')} |"
        )
    print(f"| dense | {1000 * statistics.median(times['dense']):.1f} | 1 |")


if __name__ == "__main__":
    main()
