"""DigitsClassifier: shapes, functional core, features -> logits, gradients, bad arguments."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.nets.classifier import DigitsClassifier, functional_classifier
from research.nets.mlp import functional


def _images(n, seed=1):
  return jax.random.uniform(jax.random.key(seed), (n, 8, 8, 1))


@pytest.fixture(scope="module")
def model():
  # Eager initialisation compiles one RNG kernel per shape: build one small model per file.
  return DigitsClassifier(10, (8, 16), 24, rngs=nnx.Rngs(0))


def test_default_architecture_shapes():
  abstract = nnx.eval_shape(lambda: DigitsClassifier(rngs=nnx.Rngs(0)))
  params, _, _ = functional_classifier(abstract)
  shapes = {k: {n: tuple(v.shape) for n, v in layer.items()} for k, layer in params.items()}
  assert shapes == {"conv1": {"kernel": (3, 3, 1, 32), "bias": (32,)},
                    "conv2": {"kernel": (3, 3, 32, 64), "bias": (64,)},
                    "feature": {"kernel": (256, 64), "bias": (64,)},
                    "out": {"kernel": (64, 10), "bias": (10,)}}


def test_shapes_and_functional_core_match_module(model):
  params, logits_fn, features_fn = functional_classifier(model)
  x = _images(5)
  logits, features = jax.jit(logits_fn)(params, x), jax.jit(features_fn)(params, x)
  assert logits.shape == (5, 10) and features.shape == (5, 24)
  np.testing.assert_allclose(logits, nnx.jit(lambda m, x: m(x))(model, x), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(features, nnx.jit(lambda m, x: m.features(x))(model, x), rtol=1e-5,
                             atol=1e-6)
  assert float(jnp.min(features)) >= 0.0                    # post-ReLU features
  # logits are an affine map of the features
  np.testing.assert_allclose(
      logits, features @ params["out"]["kernel"] + params["out"]["bias"], rtol=1e-5, atol=1e-6)
  assert params["conv1"]["kernel"].shape == (3, 3, 1, 8)
  assert params["feature"]["kernel"].shape == (2 * 2 * 16, 24)
  # research.nets.mlp.functional gives the same logits
  p2, apply = functional(model)
  np.testing.assert_allclose(jax.jit(apply)(p2, x), logits, rtol=1e-5, atol=1e-6)


def test_per_example_independence_under_vmap(model):
  params, logits_fn, _ = functional_classifier(model)
  x = _images(6)
  batched = jax.jit(logits_fn)(params, x)
  single = jax.jit(jax.vmap(lambda xi: logits_fn(params, xi[None])[0]))(x)
  np.testing.assert_allclose(single, batched, rtol=1e-5, atol=1e-5)


def test_gradients_reach_every_parameter(model):
  params, logits_fn, _ = functional_classifier(model)
  x, labels = _images(16), jnp.arange(16) % 10

  @jax.jit
  def loss(p):
    return -jnp.mean(jax.nn.log_softmax(logits_fn(p, x))[jnp.arange(16), labels])

  grads = jax.jit(jax.grad(loss))(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert float(jnp.max(jnp.abs(g))) > 0.0, path
  # a finite-difference check along the gradient direction
  eps = 1e-3
  grads = jax.tree.map(np.asarray, grads)
  norm = np.sqrt(sum(np.sum(g**2) for g in jax.tree.leaves(grads)))
  direction = jax.tree.map(lambda g: g / norm, grads)
  plus = jax.tree.map(lambda p, d: np.asarray(p) + eps * d, params, direction)
  minus = jax.tree.map(lambda p, d: np.asarray(p) - eps * d, params, direction)
  fd = (loss(plus) - loss(minus)) / (2 * eps)           # directional derivative along grad/|grad|
  np.testing.assert_allclose(fd, norm, rtol=2e-2)


def test_bad_arguments_raise(model):
  with pytest.raises(ValueError, match="num_classes"):
    DigitsClassifier(1, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="channels"):
    DigitsClassifier(10, (32,), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="channels"):
    DigitsClassifier(10, (32, 0), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="feature_dim"):
    DigitsClassifier(10, (8, 8), 0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="x must have shape"):
    model(jnp.zeros((2, 16, 16, 1)))
  with pytest.raises(ValueError, match="x must have shape"):
    model.features(jnp.zeros((8, 8, 1)))
  with pytest.raises(ValueError, match="module"):
    functional_classifier(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
