"""Elementwise bijectors: the logit preprocessing of image flows (Dinh et al. 2017, Sec. 4.1).

LogitTransform(alpha): data x in [0, 1] (a dequantised image) is mapped into R by

  inverse:  s = alpha + (1 - 2 alpha) x,  z = logit(s),
            log|dz/dx| = sum [log(1 - 2 alpha) - log s - log(1 - s)]
  forward:  x = (sigmoid(z) - alpha) / (1 - 2 alpha),
            log|dx/dz| = sum [log_sigmoid(z) + log_sigmoid(-z) - log(1 - 2 alpha)]

alpha in [0, 1/2) keeps s away from 0 and 1 (RealNVP: alpha = 0.05); the
log-Jacobian is part of the model's density of x, so bits/dim computed from
Flow.log_prob already include it. Forward images lie in (-alpha/(1 - 2 alpha),
1 + alpha/(1 - 2 alpha)), slightly wider than [0, 1].
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from research.flows.bijectors import Bijector, sum_event

__all__ = ["LogitTransform"]


@dataclasses.dataclass(frozen=True)
class LogitTransform(Bijector):
  """x in [0, 1] <-> z = logit(alpha + (1 - 2 alpha) x), elementwise over event_ndim axes."""
  event_ndim: int = 3
  alpha: float = 0.05

  def __post_init__(self):
    if not 0.0 <= self.alpha < 0.5:
      raise ValueError(f"alpha must be in [0, 0.5), got {self.alpha!r}")
    if isinstance(self.event_ndim, bool) or not isinstance(self.event_ndim, int) \
        or self.event_ndim < 1:
      raise ValueError(f"event_ndim must be an integer >= 1, got {self.event_ndim!r}")

  def forward_and_log_det(self, params, z):
    del params
    width = 1.0 - 2.0 * self.alpha
    x = (jax.nn.sigmoid(z) - self.alpha) / width
    log_det = jax.nn.log_sigmoid(z) + jax.nn.log_sigmoid(-z) - math.log(width)
    return x, sum_event(log_det, self.event_ndim)

  def inverse_and_log_det(self, params, x):
    del params
    width = 1.0 - 2.0 * self.alpha
    s = self.alpha + width * x
    z = jnp.log(s) - jnp.log1p(-s)
    log_det = math.log(width) - jnp.log(s) - jnp.log1p(-s)
    return z, sum_event(log_det, self.event_ndim)
