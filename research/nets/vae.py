"""MLP encoder and decoder for variational autoencoders (Flax NNX; Kingma & Welling 2014).

`MLPEncoder` flattens an example's event axes (e.g. an 8x8x1 image -> 64) and
returns the parameters of q(z|x) = N(mu, diag exp(log_var)). `MLPDecoder` maps
z of shape (..., latent_dim) -- any leading axes, e.g. (k, batch) importance
samples -- to an output of shape (..., *out_shape): Bernoulli logits, a
Gaussian (mean, log_var) pair when built with `log_var` (fixed observation
noise, or a learned per-dimension log-variance with `learn_log_var=True`), or
logits over L grey levels, shape (..., *out_shape, L), when built with `levels=L`.
Use research.nets.mlp.functional to get (params, apply) with pure params.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx


def _check_widths(hidden):
  if not hidden or any(int(h) < 1 for h in hidden):
    raise ValueError(f"hidden must be a non-empty list of positive widths, got {hidden}")


def _mlp(widths, rngs):
  return nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])


class MLPEncoder(nnx.Module):
  """x (batch, *event_shape) -> (mu, log_var), each (batch, latent_dim).

  h_0 = flatten(x), h_{l+1} = act(W_l h_l + b_l), [mu, log_var] = W_L h_L + b_L.
  """

  def __init__(self, event_shape: Sequence[int], latent_dim: int,
               hidden: Sequence[int] = (256, 256), *,
               activation: Callable[[jax.Array], jax.Array] = nnx.silu, rngs: nnx.Rngs):
    if latent_dim < 1:
      raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
    _check_widths(hidden)
    self.event_shape = tuple(int(d) for d in event_shape)
    self.latent_dim = latent_dim
    self.activation = activation
    self.layers = _mlp([math.prod(self.event_shape), *hidden], rngs)
    self.out = nnx.Linear(hidden[-1], 2 * latent_dim, rngs=rngs)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    n = len(self.event_shape)
    if tuple(x.shape[x.ndim - n:]) != self.event_shape:
      raise ValueError(f"x must end in event_shape {self.event_shape}, got shape {x.shape}")
    h = x.reshape(*x.shape[:x.ndim - n], -1)
    for layer in self.layers:
      h = self.activation(layer(h))
    mu, log_var = jnp.split(self.out(h), 2, axis=-1)
    return mu, log_var


def check_levels(levels, log_var) -> tuple[int, ...]:
  """() for levels=None, else (L,) for an integer L >= 2 (not with a Gaussian log_var)."""
  if levels is None:
    return ()
  if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
    raise ValueError(f"levels must be None or an integer >= 2, got {levels!r}")
  if log_var is not None:
    raise ValueError("levels (a categorical decoder) and log_var (a Gaussian one) exclude each "
                     "other")
  return (levels,)


class MLPDecoder(nnx.Module):
  """z (..., latent_dim) -> logits (..., *out_shape), or (mean, log_var) for a Gaussian decoder.

  h_0 = z, h_{l+1} = act(W_l h_l + b_l), out = reshape(W_L h_L + b_L, out_shape).
  log_var=None: returns `out` (Bernoulli logits, or a mean under external noise).
  log_var=float: returns (out, log_var broadcast to out's shape); the log-variance is
  that constant, or a learned per-dimension parameter initialised to it when
  learn_log_var=True (a homoscedastic decoder: it does not depend on z).
  levels=L: out has shape (..., *out_shape, L), logits over L grey levels per pixel
  (a categorical decoder).
  """

  def __init__(self, latent_dim: int, out_shape: Sequence[int], hidden: Sequence[int] = (256, 256),
               *, log_var: float | None = None, learn_log_var: bool = False,
               levels: int | None = None,
               activation: Callable[[jax.Array], jax.Array] = nnx.silu, rngs: nnx.Rngs):
    if latent_dim < 1:
      raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
    _check_widths(hidden)
    if learn_log_var and log_var is None:
      raise ValueError("learn_log_var=True needs an initial log_var (a float), got None")
    self.out_shape = tuple(int(d) for d in out_shape) + check_levels(levels, log_var)
    self.latent_dim = latent_dim
    self.activation = activation
    self.layers = _mlp([latent_dim, *hidden], rngs)
    self.out = nnx.Linear(hidden[-1], math.prod(self.out_shape), rngs=rngs)
    self.gaussian = log_var is not None
    if learn_log_var:
      self.log_var = nnx.Param(jnp.full(self.out_shape, log_var, jnp.float32))
    else:
      self.log_var = None if log_var is None else float(log_var)

  def __call__(self, z: jax.Array):
    if z.shape[-1] != self.latent_dim:
      raise ValueError(f"z must end in latent_dim={self.latent_dim}, got shape {z.shape}")
    h = z
    for layer in self.layers:
      h = self.activation(layer(h))
    out = self.out(h).reshape(*z.shape[:-1], *self.out_shape)
    if not self.gaussian:
      return out
    log_var = self.log_var[...] if isinstance(self.log_var, nnx.Param) else self.log_var
    return out, jnp.broadcast_to(jnp.asarray(log_var, out.dtype), out.shape)
