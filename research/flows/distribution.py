"""A flow distribution: a bijector over a standard normal base, with exact log-density.

x = G(z), z ~ N(0, I) on the latent event shape (the bijector's inverse_shape of
the data event shape). Change of variables (Rezende & Mohamed 2015; Dinh et al. 2017):

  log p(x) = log N(G^{-1}(x); 0, I) + log|det dG^{-1}/dx|

`log_prob` is one inverse pass; `sample` / `rsample` one forward pass. rsample is
the reparameterised draw: gradients reach the parameters through x = G_theta(z)
with z fixed by the key (sample is the same value under stop_gradient).
`sample_and_log_prob` gives both from the forward pass, log p(x) = log N(z) -
log|det dG/dz|. A temperature T draws z ~ N(0, T^2 I) (Glow's reduced-temperature
samples, Kingma & Dhariwal 2018); log-densities stay those of the model (T = 1).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from research.flows.bijectors import Bijector, check_event, check_positive_int, sum_event

__all__ = ["Flow", "standard_normal_log_prob"]


def standard_normal_log_prob(z: jax.Array, event_ndim: int) -> jax.Array:
  """sum over the event of log N(z_i; 0, 1) = -(z_i^2 + log 2 pi) / 2."""
  return sum_event(-0.5 * (jnp.square(z) + math.log(2 * math.pi)), event_ndim)


@dataclasses.dataclass(frozen=True)
class Flow:
  """p(x) of x = bijector.forward(z), z ~ N(0, I); event_shape: the data event shape."""
  bijector: Bijector
  event_shape: tuple

  def __post_init__(self):
    if not isinstance(self.bijector, Bijector):
      raise ValueError(f"bijector must be a Bijector, got {self.bijector!r}")
    shape = tuple(self.event_shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
      raise ValueError(f"event_shape must be a non-empty tuple of positive ints, got "
                       f"{self.event_shape!r}")
    object.__setattr__(self, "event_shape", shape)
    if len(shape) != self.bijector.event_ndim:
      raise ValueError(f"event_shape {shape} has {len(shape)} axes but the bijector's events "
                       f"have {self.bijector.event_ndim}")

  @property
  def latent_shape(self) -> tuple:
    return self.bijector.inverse_shape(self.event_shape)

  @property
  def latent_ndim(self) -> int:
    return len(self.latent_shape)

  def init(self, key: jax.Array, x: jax.Array):
    """Parameters from a data batch x (batch, *event_shape) (ActNorm's data-dependent init)."""
    check_event(x, self.event_shape, "x")
    return self.bijector.init(key, x)

  def log_prob(self, params, x: jax.Array) -> jax.Array:
    """log p(x) for x (*batch, *event_shape) -> (*batch,)."""
    check_event(x, self.event_shape, "x")
    z, log_det = self.bijector.inverse_and_log_det(params, x)
    return standard_normal_log_prob(z, self.latent_ndim) + log_det

  def _latent(self, key, n, temperature):
    check_positive_int(n, "n")
    if not isinstance(temperature, jax.Array) and not temperature > 0:
      raise ValueError(f"temperature must be > 0, got {temperature!r}")
    return temperature * jax.random.normal(key, (n, *self.latent_shape), jnp.float32)

  def rsample(self, params, key: jax.Array, n: int, *, temperature=1.0) -> jax.Array:
    """n reparameterised draws x = G(z) (n, *event_shape); gradients reach params."""
    return self.bijector.forward(params, self._latent(key, n, temperature))

  def sample(self, params, key: jax.Array, n: int, *, temperature=1.0) -> jax.Array:
    """n draws, as rsample under stop_gradient."""
    return jax.lax.stop_gradient(self.rsample(params, key, n, temperature=temperature))

  def sample_and_log_prob(self, params, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """(x, log p(x)) from one forward pass: log p(x) = log N(z) - log|det dG/dz|."""
    z = self._latent(key, n, 1.0)
    x, log_det = self.bijector.forward_and_log_det(params, z)
    return x, standard_normal_log_prob(z, self.latent_ndim) - log_det
