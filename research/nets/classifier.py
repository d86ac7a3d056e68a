"""A small CNN classifier for 8x8 grey-scale digits, whose penultimate layer is a metric space.

  h1 = avgpool2(relu(conv3x3(x)))            (8, 8, 1) -> (4, 4, c1)
  h2 = avgpool2(relu(conv3x3(h1)))           -> (2, 2, c2)
  features = relu(W_f flatten(h2) + b_f)     -> (feature_dim,)
  logits = W_o features + b_o                -> (num_classes,)

Trained on scikit-learn's digits (experiments/classifier.py), the features
play the role Inception-V3's pool3 activations play in FID (Heusel et al.
2017): Fréchet distance and k-NN precision/recall of generated digits are
measured in this space (experiments/image_metrics.py). Inputs are (B, 8, 8, 1)
with pixels in [0, 1]. `functional_classifier(module)` gives pure
(params, logits_fn, features_fn) in the manner of research.nets.mlp.functional.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["DigitsClassifier", "functional_classifier", "INPUT_SHAPE"]

INPUT_SHAPE = (8, 8, 1)


def _avg_pool2(x):
  return nnx.avg_pool(x, window_shape=(2, 2), strides=(2, 2))


class DigitsClassifier(nnx.Module):
  """CNN on (B, 8, 8, 1) digits: two conv + 2x2 average-pool stages, a feature layer, logits."""

  def __init__(self, num_classes: int = 10, channels: Sequence[int] = (32, 64),
               feature_dim: int = 64, *, rngs: nnx.Rngs):
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
      raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    channels = tuple(channels)
    if len(channels) != 2 or any(int(c) != c or c < 1 for c in channels):
      raise ValueError(f"channels must be two positive integers (c1, c2), got {channels!r}")
    if isinstance(feature_dim, bool) or not isinstance(feature_dim, int) or feature_dim < 1:
      raise ValueError(f"feature_dim must be a positive integer, got {feature_dim!r}")
    c1, c2 = (int(c) for c in channels)
    self.num_classes = num_classes
    self.channels = (c1, c2)
    self.feature_dim = feature_dim
    self.conv1 = nnx.Conv(1, c1, (3, 3), padding="SAME", rngs=rngs)
    self.conv2 = nnx.Conv(c1, c2, (3, 3), padding="SAME", rngs=rngs)
    self.feature = nnx.Linear(2 * 2 * c2, feature_dim, rngs=rngs)
    self.out = nnx.Linear(feature_dim, num_classes, rngs=rngs)

  def features(self, x: jax.Array) -> jax.Array:
    """(B, 8, 8, 1) images in [0, 1] -> (B, feature_dim) penultimate features (post-ReLU)."""
    if x.ndim != 4 or tuple(x.shape[1:]) != INPUT_SHAPE:
      raise ValueError(f"x must have shape (batch, 8, 8, 1), got shape {x.shape}")
    h = _avg_pool2(nnx.relu(self.conv1(x)))
    h = _avg_pool2(nnx.relu(self.conv2(h)))
    return nnx.relu(self.feature(h.reshape(h.shape[0], -1)))

  def __call__(self, x: jax.Array) -> jax.Array:
    """(B, 8, 8, 1) images in [0, 1] -> (B, num_classes) logits."""
    return self.out(self.features(x))


def functional_classifier(module: DigitsClassifier):
  """(params, logits_fn, features_fn): pure functions of a plain parameter pytree.

  logits_fn(params, x) -> (B, num_classes); features_fn(params, x) -> (B, feature_dim).
  params is the nested dict of nnx.to_pure_dict (checkpointable, vmappable).
  """
  if not isinstance(module, DigitsClassifier):
    raise ValueError(f"module must be a DigitsClassifier, got {type(module).__name__}")
  graphdef, state = nnx.split(module)
  params = nnx.to_pure_dict(state)

  def logits_fn(p, x):
    return nnx.merge(graphdef, nnx.State(p))(jnp.asarray(x, jnp.float32))

  def features_fn(p, x):
    return nnx.merge(graphdef, nnx.State(p)).features(jnp.asarray(x, jnp.float32))

  return params, logits_fn, features_fn
