"""Coupling layers (Dinh et al. 2017 RealNVP; Durkan et al. 2019 neural spline flows).

The event's last axis (the vector, or an image's channels) is split at k = C // 2
into x_a = x[..., :k] and x_b = x[..., k:] (parity 1 swaps the roles). The
conditioned half passes through unchanged and parameterises an elementwise
transformer of the other half:

  y_a = x_a,  y_b = tau(x_b; NN(x_a)),  log|det dy/dx| = sum log|tau'(x_b; NN(x_a))|

and the inverse is x_b = tau^{-1}(y_b; NN(y_a)), as cheap as the forward. The
transformer is `transformers.Affine` (RealNVP: y = x s + t, bounded log-scale) or
`splines.RationalQuadratic` (a monotone spline with linear tails); the conditioner
is `conditioners.MLP` for vectors or `conditioners.Conv` for images (its last layer
zero-initialised, so the layer starts as the identity). Alternate parities (or
permute between layers) so every dimension is transformed.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from research.flows import conditioners as cond
from research.flows.bijectors import Bijector, check_event, sum_event

__all__ = ["Coupling"]


@dataclasses.dataclass(frozen=True)
class Coupling(Bijector):
  """A coupling layer over events of shape event_shape ((D,) or (H, W, C))."""
  event_shape: tuple
  transformer: object
  conditioner: object
  parity: int = 0

  def __post_init__(self):
    shape = tuple(self.event_shape)
    if len(shape) not in (1, 3) or any(isinstance(d, bool) or not isinstance(d, int) or d < 1
                                       for d in shape):
      raise ValueError(f"event_shape must be (D,) or (H, W, C) of positive ints, got "
                       f"{self.event_shape!r}")
    if shape[-1] < 2:
      raise ValueError(f"event_shape {shape}: a coupling layer splits the last axis into two "
                       f"non-empty halves, so it needs >= 2 channels (squeeze an image first), "
                       f"got {shape[-1]}")
    if self.parity not in (0, 1):
      raise ValueError(f"parity must be 0 or 1, got {self.parity!r}")
    if not hasattr(self.transformer, "num_params"):
      raise ValueError(f"transformer must be an elementwise transformer (Affine, "
                       f"RationalQuadratic), got {self.transformer!r}")
    object.__setattr__(self, "event_shape", shape)
    if not isinstance(self.conditioner, (cond.MLP, cond.Conv)):
      raise ValueError(f"conditioner must be conditioners.MLP or conditioners.Conv, got "
                       f"{self.conditioner!r}")
    if isinstance(self.conditioner, cond.MLP) != (len(shape) == 1):
      raise ValueError(f"conditioner {self.conditioner!r} does not fit event_shape {shape}: "
                       f"use conditioners.MLP for vectors and conditioners.Conv for images")

  @property
  def event_ndim(self) -> int:
    return len(self.event_shape)

  def _sizes(self):
    c = self.event_shape[-1]
    k = c // 2
    return (k, c - k) if self.parity == 0 else (c - k, k)

  def _split(self, x):
    c = self.event_shape[-1]
    k = c // 2
    first, second = x[..., :k], x[..., k:]
    return (first, second) if self.parity == 0 else (second, first)

  def _join(self, a, b):
    return jnp.concatenate([a, b] if self.parity == 0 else [b, a], axis=-1)

  def _in_shape(self):
    return (*self.event_shape[:-1], self._sizes()[0])

  def _out_dim(self):
    return self._sizes()[1] * self.transformer.num_params

  def init(self, key, x):
    return {"conditioner": cond.init(self.conditioner, key, self._in_shape(), self._out_dim())}

  def _raw(self, params, x_a):
    out = cond.apply(self.conditioner, self._in_shape(), self._out_dim())(
        params["conditioner"], x_a)
    return out.reshape(*out.shape[:-1], self._sizes()[1], self.transformer.num_params)

  def forward_and_log_det(self, params, z):
    check_event(z, self.event_shape, "z")
    z_a, z_b = self._split(z)
    x_b, log_det = self.transformer.forward(self._raw(params, z_a), z_b)
    return self._join(z_a, x_b), sum_event(log_det, self.event_ndim)

  def inverse_and_log_det(self, params, x):
    check_event(x, self.event_shape, "x")
    x_a, x_b = self._split(x)
    z_b, log_det = self.transformer.inverse(self._raw(params, x_a), x_b)
    return self._join(x_a, z_b), sum_event(log_det, self.event_ndim)
