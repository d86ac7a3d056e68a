"""Elementwise transformers: the invertible scalar maps that coupling layers and MAF apply.

A transformer maps each dimension x_i to y_i = tau(x_i; raw_i) with parameters
raw_i in R^{num_params} produced by a conditioner network. Contract:

  num_params                        parameters per transformed dimension
  forward(raw, x)  -> (y, log|dy/dx|)   raw: (..., d, num_params), x: (..., d)
  inverse(raw, y)  -> (x, log|dx/dy|)   elementwise log-dets of shape (..., d)

with raw = 0 the identity, so a conditioner whose last layer is zero-initialised
makes the whole flow the identity at initialisation.

Affine (RealNVP, Dinh et al. 2017): y = x * scale + shift with a bounded scale,
  log scale = b tanh(r / b), b = `scale_bound` (default 3: scale in [e^-3, e^3]),
  so the scale can neither vanish nor explode (affine couplings diverge on curved
  targets when the log-scale is unbounded), and log|dy/dx| = log scale.
Spline (Durkan et al. 2019): research/flows/splines.py, `RationalQuadratic`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

__all__ = ["Affine"]


@dataclasses.dataclass(frozen=True)
class Affine:
  """y = x exp(b tanh(r / b)) + shift: raw[..., 0] = shift, raw[..., 1] = r."""
  scale_bound: float = 3.0
  num_params: int = dataclasses.field(default=2, init=False)

  def __post_init__(self):
    if not self.scale_bound > 0:
      raise ValueError(f"scale_bound must be > 0, got {self.scale_bound!r}")

  def _shift_log_scale(self, raw):
    b = self.scale_bound
    return raw[..., 0], b * jnp.tanh(raw[..., 1] / b)

  def forward(self, raw: jax.Array, x: jax.Array):
    shift, log_scale = self._shift_log_scale(raw)
    return x * jnp.exp(log_scale) + shift, log_scale

  def inverse(self, raw: jax.Array, y: jax.Array):
    shift, log_scale = self._shift_log_scale(raw)
    return (y - shift) * jnp.exp(-log_scale), -log_scale
