"""VelocityMLP and its functional core."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.nets.mlp import VelocityMLP, functional, sinusoidal_embedding


def test_sinusoidal_embedding_formula():
  t = jnp.array([0.0, 1.0, 250.0])
  emb = sinusoidal_embedding(t, 8)
  freqs = np.exp(-np.log(10_000.0) * np.arange(4) / 4)
  expected = np.concatenate([np.cos(np.outer(t, freqs)), np.sin(np.outer(t, freqs))], -1)
  np.testing.assert_allclose(emb, expected, rtol=1e-5, atol=1e-5)
  assert sinusoidal_embedding(jnp.float32(3.0), 8).shape == (8,)
  with pytest.raises(ValueError, match="dim"):
    sinusoidal_embedding(t, 7)


def test_functional_apply_matches_module_and_is_pure():
  module = VelocityMLP(3, (16, 16), time_dim=8, rngs=nnx.Rngs(0))
  params, apply = functional(module)
  x = jax.random.normal(jax.random.key(1), (5, 3))
  t = jnp.linspace(0, 1, 5)
  np.testing.assert_allclose(jax.jit(apply)(params, x, t), module(x, t), rtol=1e-6)
  # scalar t broadcasts over the batch
  np.testing.assert_allclose(apply(params, x, 0.5), apply(params, x, jnp.full(5, 0.5)), rtol=1e-6)
  # params are a plain pytree: zeroing them zeroes the output
  zero = jax.tree.map(jnp.zeros_like, params)
  np.testing.assert_array_equal(apply(zero, x, t), 0.0)


def test_vmap_over_stacked_params_and_gradients():
  keys = jax.random.split(jax.random.key(0), 4)
  _, apply = functional(VelocityMLP(2, (8,), time_dim=4, rngs=nnx.Rngs(0)))
  stacked = jax.vmap(lambda k: functional(VelocityMLP(2, (8,), time_dim=4, rngs=nnx.Rngs(k)))[0])(keys)
  x = jnp.ones((3, 2))
  out = jax.vmap(lambda p: apply(p, x, 0.3))(stacked)
  assert out.shape == (4, 3, 2) and not np.allclose(out[0], out[1])
  grads = jax.grad(lambda p: jnp.sum(apply(p, x, 0.3) ** 2))(jax.tree.map(lambda a: a[0], stacked))
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_bad_widths():
  with pytest.raises(ValueError, match="hidden"):
    VelocityMLP(2, (), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="dim"):
    VelocityMLP(0, (4,), rngs=nnx.Rngs(0))
