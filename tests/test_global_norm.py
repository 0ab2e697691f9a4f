"""The train step's grad-norm metric: one fused reduction, the same value as optax's."""

import jax.numpy as jnp
import numpy as np
import optax

from harness.runtime.steps import global_norm


def test_global_norm_equals_optax_over_mixed_shapes_and_dtypes():
    tree = {
        "w": jnp.arange(12.0).reshape(3, 4) - 5.0,
        "b": jnp.array([0.5, -2.0]),
        "nested": {"scale": jnp.array(3.0), "half": jnp.ones((2, 2), jnp.bfloat16)},
    }
    np.testing.assert_allclose(global_norm(tree), optax.global_norm(tree), rtol=1e-6)
    assert global_norm(tree).dtype == jnp.float32
