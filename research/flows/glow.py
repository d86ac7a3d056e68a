"""Glow's layers: ActNorm and the LU-parameterised invertible linear map / 1x1 convolution.

Kingma & Dhariwal 2018, "Glow: Generative Flow with Invertible 1x1 Convolutions",
Sec. 3.1-3.2 and Table 1. Both act on the event's last axis (a vector's entries or
an image's channels) identically at each of the n = prod(event_shape[:-1])
positions, so their log-dets are n times a per-position one:

  ActNorm:   x = z exp(log_scale) + loc,            log|det dx/dz| = n sum(log_scale)
  LULinear:  x = W z,  W = P L (U + diag(exp(log_s))),  log|det dx/dz| = n sum(log_s)

ActNorm initialises from data: on the init batch, z = (x - loc) exp(-log_scale) has
zero mean and unit variance per channel. LULinear starts as a random rotation (so
volume preserving but not the identity) and inverts with two triangular solves.
Glow writes both maps in the data -> latent direction; here they are written in the
forward (latent -> data) direction of bijectors.py, which is the same family of maps
(the inverse of an affine or an invertible linear map is again one).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import lu, solve_triangular

from research.flows.bijectors import Bijector, check_event, check_positive_int, check_event_shape
from research.flows.permutations import random_permutation

__all__ = ["ActNorm", "LULinear", "Invertible1x1Conv"]


_event_shape = check_event_shape


def _float_dtype(x):
  dtype = jnp.result_type(x)
  return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.float32


class _ChannelLayer(Bijector):
  """Shared shape bookkeeping of a layer acting on the last axis at every position."""
  event_shape: tuple

  @property
  def event_ndim(self) -> int:
    return len(self.event_shape)

  @property
  def num_positions(self) -> int:
    """n = prod(event_shape[:-1]): the positions sharing the per-channel map."""
    return math.prod(self.event_shape[:-1])

  def _batch_log_det(self, a, per_position):
    batch_shape = a.shape[:a.ndim - self.event_ndim]
    return jnp.broadcast_to(self.num_positions * per_position, batch_shape).astype(a.dtype)


@dataclasses.dataclass(frozen=True)
class ActNorm(_ChannelLayer):
  """Per-channel affine x = z exp(log_scale) + loc, initialised from data (Glow, Sec. 3.1).

  params: {"loc": (C,), "log_scale": (C,)}; init(key, x) sets loc = mean and
  log_scale = log(std + eps) of x over every non-channel axis (batch included).
  """
  event_shape: tuple
  eps: float = 1e-6

  def __post_init__(self):
    object.__setattr__(self, "event_shape", _event_shape(self.event_shape))
    if not self.eps > 0:
      raise ValueError(f"eps must be > 0, got {self.eps!r}")

  def init(self, key, x):
    del key
    check_event(x, self.event_shape, "x")
    if x.ndim <= self.event_ndim:
      raise ValueError(f"x must be a batch of shape (batch, *{self.event_shape}) for the "
                       f"data-dependent initialisation, got shape {x.shape}")
    x = jnp.asarray(x, _float_dtype(x))
    axes = tuple(range(x.ndim - 1))
    loc = jnp.mean(x, axis=axes)
    std = jnp.sqrt(jnp.mean(jnp.square(x - loc), axis=axes))
    return {"loc": loc, "log_scale": jnp.log(std + self.eps)}

  def forward_and_log_det(self, params, z):
    check_event(z, self.event_shape, "z")
    log_scale = params["log_scale"]
    x = z * jnp.exp(log_scale) + params["loc"]
    return x, self._batch_log_det(x, jnp.sum(log_scale))

  def inverse_and_log_det(self, params, x):
    check_event(x, self.event_shape, "x")
    log_scale = params["log_scale"]
    z = (x - params["loc"]) * jnp.exp(-log_scale)
    return z, self._batch_log_det(z, -jnp.sum(log_scale))


@dataclasses.dataclass(frozen=True)
class LULinear(_ChannelLayer):
  """x = W z on the last axis, W = P L (U + diag(exp(log_s))) (Glow, Sec. 3.2, LU form).

  P: a fixed permutation from `seed` (static, on the dataclass: `permutation`, with
  (P v)_i = v[permutation[i]]); L unit lower triangular; U strictly upper triangular.
  params: {"lower": (C, C), "upper": (C, C), "log_s": (C,)}; only the strictly
  lower / strictly upper entries of "lower" / "upper" are used (the rest get zero
  gradients). Glow writes s = sign(s) exp(log|s|) with a frozen sign; here the sign
  is folded into L and U at init (conjugating by D = diag(sign)), so s = exp(log_s)
  and no parameter must be kept from the optimiser. init draws a Haar rotation Q
  (QR of a Gaussian from the key), takes its pivoted LU Q = P' L' U' and sets
  L = D L' D, U = strict_upper(D U'), log_s = log|diag U'|: then W = P D P'^T Q is
  orthogonal (log-det 0) and |L| <= 1 entrywise. On images this is the invertible
  1x1 convolution.
  """
  event_shape: tuple
  seed: int = 0
  permutation: tuple = dataclasses.field(init=False, default=())

  def __post_init__(self):
    shape = _event_shape(self.event_shape)
    check_positive_int(self.seed, "seed", minimum=0)
    object.__setattr__(self, "event_shape", shape)
    object.__setattr__(self, "permutation", random_permutation(self.seed, shape[-1]))

  def init(self, key, x):
    check_event(x, self.event_shape, "x")
    c = self.event_shape[-1]
    dtype = _float_dtype(x)
    q, r = jnp.linalg.qr(jax.random.normal(key, (c, c), dtype))
    q = q * jnp.where(jnp.diag(r) < 0, -1.0, 1.0).astype(dtype)  # Haar-distributed
    _, lower, upper = lu(q)
    diag = jnp.diag(upper)
    sign = jnp.where(diag < 0, -1.0, 1.0).astype(dtype)
    return {"lower": jnp.tril(sign[:, None] * lower * sign[None, :], -1),
            "upper": jnp.triu(sign[:, None] * upper, 1),
            "log_s": jnp.log(jnp.abs(diag))}

  def _factors(self, params):
    c = self.event_shape[-1]
    lower = jnp.tril(params["lower"], -1) + jnp.eye(c, dtype=params["lower"].dtype)
    upper = jnp.triu(params["upper"], 1) + jnp.diag(jnp.exp(params["log_s"]))
    return lower, upper

  def weight(self, params) -> jax.Array:
    """The (C, C) matrix W = P L U with x = W z."""
    lower, upper = self._factors(params)
    return (lower @ upper)[jnp.asarray(self.permutation)]

  def forward_and_log_det(self, params, z):
    check_event(z, self.event_shape, "z")
    x = jnp.einsum("...j,ij->...i", z, self.weight(params))
    return x, self._batch_log_det(x, jnp.sum(params["log_s"]))

  def inverse_and_log_det(self, params, x):
    check_event(x, self.event_shape, "x")
    lower, upper = self._factors(params)
    c = self.event_shape[-1]
    y = x[..., jnp.asarray(np.argsort(self.permutation))]  # P^T x
    cols = y.reshape(-1, c).T  # one right-hand side per position and example
    cols = solve_triangular(lower, cols, lower=True, unit_diagonal=True)
    cols = solve_triangular(upper, cols, lower=False)
    z = cols.T.reshape(x.shape)
    return z, self._batch_log_det(z, -jnp.sum(params["log_s"]))


Invertible1x1Conv = LULinear
"""Glow's invertible 1x1 convolution: LULinear over (H, W, C) events (the same map per pixel)."""
