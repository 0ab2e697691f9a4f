r"""Do the MoE bench layers compute the same under a newer jax as under the lock's 0.4.26?

  .venv/bin/python bench/jax_compat_check.py save /tmp/ref.pkl           # lock's jax
  JAX_THREEFRY_PARTITIONABLE=false PYTHONPATH=/tmp/site \
      python3.12 bench/jax_compat.py bench/jax_compat_check.py compare /tmp/ref.pkl

`save` initialises bench/moe_layer.py's four layers (dense, einsum, gather, gshard; D=64, E=4,
k=2, 1024 tokens, fp32) and stores params, outputs and gradients; `compare` applies the same
params to the same inputs and prints the relative differences (CPU; no accelerator needed).
Run `compare` with JAX_THREEFRY_PARTITIONABLE=false: jax >= 0.5 defaults to the partitionable
threefry, so the router noise of our layers is drawn from a different stream.
"""

import os
import pickle
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_layer  # bench/moe_layer.py puts the repo root on sys.path
from praxis import base_layer

D, E, K, TOKENS, GROUP = 64, 4, 2, 1024, 512


def main() -> None:
    mode, path = sys.argv[1], sys.argv[2]
    cap = moe_layer.routing.expert_capacity(GROUP, E, K, 1.0)
    x = np.random.default_rng(0).normal(size=(TOKENS // 256, 256, D)).astype(np.float32)
    configs = {
        "dense": moe_layer._dense(D, K * 4 * D),
        "einsum": moe_layer._ours(D, 4 * D, E, K, 1.0, GROUP, "einsum"),
        "gather": moe_layer._ours(D, 4 * D, E, K, 1.0, GROUP, "gather"),
        "gshard": moe_layer._gshard(D, 4 * D, E, cap, TOKENS // GROUP),
    }
    if mode == "compare":
        with open(path, "rb") as f:
            saved = pickle.load(f)
    out = {}
    for name, config in configs.items():
        layer = base_layer.instantiate(config)
        if mode == "save":
            rngs = {
                base_layer.PARAMS: jax.random.PRNGKey(0),
                base_layer.RANDOM: jax.random.PRNGKey(1),
            }
            params = jax.tree_util.tree_map(np.asarray, layer.init(rngs, x)[base_layer.PARAMS])
        else:
            params = saved[name][0]

        def loss(p, inputs, layer=layer):
            y, _ = layer.apply(
                {base_layer.PARAMS: p},
                inputs,
                rngs={base_layer.RANDOM: jax.random.PRNGKey(2)},
                mutable=True,
            )
            return jnp.mean(jnp.square(y)), y

        (_, y), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params, x)
        out[name] = (params, np.asarray(y), jax.tree_util.tree_map(np.asarray, grads))
        if mode == "compare":
            y0, g0 = saved[name][1], jax.tree_util.tree_leaves(saved[name][2])
            rel = np.linalg.norm(out[name][1] - y0) / np.linalg.norm(y0)
            worst = max(
                np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)
                for a, b in zip(jax.tree_util.tree_leaves(out[name][2]), g0, strict=True)
            )
            print(f"{name}: output rel diff {rel:.1e}, worst gradient leaf rel diff {worst:.1e}")
    if mode == "save":
        with open(path, "wb") as f:
            pickle.dump(out, f)


if __name__ == "__main__":
    main()
