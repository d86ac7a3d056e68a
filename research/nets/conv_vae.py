"""Convolutional encoder and decoder for image VAEs (Flax NNX, NHWC; Kingma & Welling 2014).

Drop-in replacements for research.nets.vae's MLPEncoder / MLPDecoder, with the
same positional arguments and output conventions (the third argument is a list
of conv widths instead of MLP widths):

  ConvEncoder(image_shape, latent_dim, channels=(32, 64)):
    x (..., H, W, C) -> h = act(Conv3x3 stride 2) per width -> flatten ->
    [mu, log_var] = W h + b, each (..., latent_dim): q(z|x) = N(mu, diag exp(log_var)).
  ConvDecoder(latent_dim, image_shape, channels=(64, 32)):
    z (..., latent_dim), any leading axes (e.g. (k, batch) importance samples) ->
    h = reshape(act(W z + b), (H / 2^n, W / 2^n, channels[0])) ->
    act(ConvTranspose4x4 stride 2) per width -> Conv3x3 to C -> (..., H, W, C):
    Bernoulli logits, or a Gaussian (mean, log_var) pair when built with `log_var`
    (fixed, or a learned per-pixel log-variance with learn_log_var=True); with
    `levels=L` the last conv has C L outputs: logits (..., H, W, C, L) over L grey levels.

n = len(channels) stride-2 stages, so H and W must be divisible by 2^n (8x8
digits and 28x28 MNIST with two stages, 32x32 CIFAR with up to five).
Use research.nets.mlp.functional to get (params, apply) with pure params.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from research.nets.vae import check_levels

__all__ = ["ConvEncoder", "ConvDecoder"]


def _check_image(image_shape, channels) -> tuple[tuple[int, int, int], tuple[int, ...]]:
  shape = tuple(int(d) for d in image_shape)
  if len(shape) != 3 or min(shape) < 1:
    raise ValueError(f"image_shape must be (H, W, C) with positive sizes, got {image_shape!r}")
  channels = tuple(channels)
  if not channels or any(int(c) < 1 for c in channels):
    raise ValueError(f"channels must be a non-empty list of positive widths, got {channels}")
  factor = 2 ** len(channels)
  if shape[0] % factor or shape[1] % factor:
    raise ValueError(f"image_shape {shape}: H and W must be divisible by 2**len(channels) = "
                     f"{factor} (channels={channels})")
  return shape, tuple(int(c) for c in channels)


def _check_latent(latent_dim) -> None:
  if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
    raise ValueError(f"latent_dim must be an integer >= 1, got {latent_dim!r}")


class ConvEncoder(nnx.Module):
  """x (..., H, W, C) -> (mu, log_var), each (..., latent_dim): stride-2 convs, a linear head."""

  def __init__(self, image_shape: Sequence[int], latent_dim: int,
               channels: Sequence[int] = (32, 64),
               *, activation: Callable[[jax.Array], jax.Array] = nnx.silu, rngs: nnx.Rngs):
    _check_latent(latent_dim)
    self.image_shape, channels = _check_image(image_shape, channels)
    self.event_shape = self.image_shape  # MLPEncoder's name for the same thing
    self.latent_dim = latent_dim
    self.activation = activation
    widths = [self.image_shape[-1], *channels]
    self.convs = nnx.List([nnx.Conv(a, b, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                                    rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])
    factor = 2 ** len(channels)
    features = (self.image_shape[0] // factor) * (self.image_shape[1] // factor) * channels[-1]
    self.out = nnx.Linear(features, 2 * latent_dim, rngs=rngs)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x (..., H, W, C) -> (mu, log_var), each (..., latent_dim)."""
    if x.ndim < 3 or tuple(x.shape[-3:]) != self.image_shape:
      raise ValueError(f"x must end in image_shape {self.image_shape}, got shape {x.shape}")
    lead = x.shape[:-3]
    h = x.reshape(-1, *self.image_shape)
    for conv in self.convs:
      h = self.activation(conv(h))
    mu, log_var = jnp.split(self.out(h.reshape(h.shape[0], -1)), 2, axis=-1)
    return mu.reshape(*lead, self.latent_dim), log_var.reshape(*lead, self.latent_dim)


class ConvDecoder(nnx.Module):
  """z (..., latent_dim) -> logits (..., H, W, C), or (mean, log_var) for a Gaussian decoder.

  log_var=None: returns the conv output (Bernoulli logits, or a mean under external noise).
  log_var=float: returns (out, log_var broadcast to out's shape); the log-variance is that
  constant, or a learned per-pixel parameter of shape image_shape initialised to it when
  learn_log_var=True (homoscedastic: it does not depend on z). As MLPDecoder.
  levels=L: logits (..., H, W, C, L) over L grey levels per pixel (a categorical decoder).
  """

  def __init__(self, latent_dim: int, image_shape: Sequence[int],
               channels: Sequence[int] = (64, 32),
               *, log_var: float | None = None, learn_log_var: bool = False,
               levels: int | None = None,
               activation: Callable[[jax.Array], jax.Array] = nnx.silu, rngs: nnx.Rngs):
    _check_latent(latent_dim)
    self.image_shape, channels = _check_image(image_shape, channels)
    if learn_log_var and log_var is None:
      raise ValueError("learn_log_var=True needs an initial log_var (a float), got None")
    self.levels = check_levels(levels, log_var)
    self.out_shape = self.image_shape + self.levels  # MLPDecoder's name for the same thing
    self.latent_dim = latent_dim
    self.activation = activation
    factor = 2 ** len(channels)
    self.seed = (self.image_shape[0] // factor, self.image_shape[1] // factor, channels[0])
    self.project = nnx.Linear(latent_dim, math.prod(self.seed), rngs=rngs)
    widths = [channels[0], *channels]
    self.ups = nnx.List([nnx.ConvTranspose(a, b, (4, 4), strides=(2, 2), padding="SAME", rngs=rngs)
                         for a, b in zip(widths[:-1], widths[1:])])
    self.out = nnx.Conv(channels[-1], math.prod(self.image_shape[-1:] + self.levels), (3, 3),
                        padding=((1, 1), (1, 1)), rngs=rngs)
    self.gaussian = log_var is not None
    if learn_log_var:
      self.log_var = nnx.Param(jnp.full(self.image_shape, log_var, jnp.float32))
    else:
      self.log_var = None if log_var is None else float(log_var)

  def __call__(self, z: jax.Array):
    """z (..., latent_dim) -> (..., H, W, C) (levels: (..., H, W, C, L)), or a (mean,
    log_var) pair of shape (..., H, W, C)."""
    if z.ndim < 1 or z.shape[-1] != self.latent_dim:
      raise ValueError(f"z must end in latent_dim={self.latent_dim}, got shape {z.shape}")
    lead = z.shape[:-1]
    h = self.activation(self.project(z.reshape(-1, self.latent_dim)))
    h = h.reshape(-1, *self.seed)
    for up in self.ups:
      h = self.activation(up(h))
    out = self.out(h).reshape(*lead, *self.out_shape)
    if not self.gaussian:
      return out
    log_var = self.log_var[...] if isinstance(self.log_var, nnx.Param) else self.log_var
    return out, jnp.broadcast_to(jnp.asarray(log_var, out.dtype), out.shape)
