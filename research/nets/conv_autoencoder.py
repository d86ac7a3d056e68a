"""Convolutional KL autoencoder with a spatial latent (Rombach et al. 2022, latent diffusion).

"High-Resolution Image Synthesis with Latent Diffusion Models" (LDM, Sec. 3.1 and App. G):
an encoder maps x (H, W, C) to a diagonal Gaussian posterior over a latent *image*
z (H / f, W / f, c), f = 2^(len(channels) - 1); a decoder maps z back to x. The latent
keeps a spatial layout so that a U-Net can model it (here 8x8x1 digits -> 4x4x1).

  Encoder(image_shape, latent_channels, channels=(32, 64)):
    h = Conv3x3(x) -> per level l (width channels[l]): ResBlock; then a stride-2
    Conv3x3 (not after the last level) -> SiLU -> Conv3x3 to 2 c ->
    (mu, log_var), each (..., H / f, W / f, c).
  Decoder(latent_channels, image_shape, channels=(64, 32)):
    h = Conv3x3(z) -> per level (width channels[l]): ResBlock; then nearest x2 +
    Conv3x3 (not after the last level) -> SiLU -> Conv3x3 to C: x_hat (..., H, W, C),
    the reconstruction in the data's own space (no output non-linearity, as LDM).

  ResBlock(h) = skip(h) + Conv3x3(SiLU(Conv3x3(SiLU(h))))   (skip: 1x1 conv when the
  width changes, else the identity). No normalisation layers: nothing depends on the
  batch, and the parameters are the whole state.

Upsampling is nearest-neighbour + conv (LDM's decoder), not a transposed convolution
(XLA:CPU runs those slowly at tiny resolutions). Any leading axes are accepted.
Use research.nets.mlp.functional to get (params, apply) with pure params.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["Encoder", "Decoder", "latent_shape"]


def latent_shape(image_shape: Sequence[int], latent_channels: int,
                 channels: Sequence[int]) -> tuple[int, int, int]:
  """(H / f, W / f, latent_channels), f = 2^(len(channels) - 1); ValueError if not divisible."""
  shape = tuple(int(d) for d in image_shape)
  if len(shape) != 3 or min(shape) < 1:
    raise ValueError(f"image_shape must be (H, W, C) with positive sizes, got {image_shape!r}")
  channels = tuple(channels)
  if not channels or any(isinstance(c, bool) or int(c) != c or c < 1 for c in channels):
    raise ValueError(f"channels must be a non-empty list of positive widths, got {channels}")
  if isinstance(latent_channels, bool) or not isinstance(latent_channels, int) or latent_channels < 1:
    raise ValueError(f"latent_channels must be an integer >= 1, got {latent_channels!r}")
  factor = 2 ** (len(channels) - 1)
  if shape[0] % factor or shape[1] % factor:
    raise ValueError(f"image_shape {shape}: H and W must be divisible by the downsampling "
                     f"factor 2**(len(channels) - 1) = {factor} (channels={channels})")
  return shape[0] // factor, shape[1] // factor, latent_channels


def _conv(a: int, b: int, rngs: nnx.Rngs, *, kernel: int = 3, stride: int = 1) -> nnx.Conv:
  pad = (kernel - 1) // 2
  return nnx.Conv(a, b, (kernel, kernel), strides=(stride, stride),
                  padding=((pad, pad), (pad, pad)), rngs=rngs)


class ResBlock(nnx.Module):
  """skip(h) + Conv3x3(SiLU(Conv3x3(SiLU(h))))."""

  def __init__(self, a: int, b: int, *, rngs: nnx.Rngs):
    self.conv1 = _conv(a, b, rngs)
    self.conv2 = _conv(b, b, rngs)
    self.skip = _conv(a, b, rngs, kernel=1) if a != b else None

  def __call__(self, h):
    out = self.conv2(nnx.silu(self.conv1(nnx.silu(h))))
    return out + (h if self.skip is None else self.skip(h))


class Encoder(nnx.Module):
  """x (..., H, W, C) -> (mu, log_var), each (..., H / f, W / f, latent_channels)."""

  def __init__(self, image_shape: Sequence[int], latent_channels: int,
               channels: Sequence[int] = (32, 64), *, rngs: nnx.Rngs):
    self.latent = latent_shape(image_shape, latent_channels, channels)
    self.image_shape = tuple(int(d) for d in image_shape)
    channels = tuple(int(c) for c in channels)
    self.conv_in = _conv(self.image_shape[-1], channels[0], rngs)
    widths = (channels[0], *channels)
    self.blocks = nnx.List([ResBlock(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])
    self.downs = nnx.List([_conv(c, c, rngs, stride=2) for c in channels[:-1]])
    self.conv_out = _conv(channels[-1], 2 * latent_channels, rngs)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    if x.ndim < 3 or tuple(x.shape[-3:]) != self.image_shape:
      raise ValueError(f"x must end in image_shape {self.image_shape}, got shape {x.shape}")
    lead = x.shape[:-3]
    h = self.conv_in(x.reshape(-1, *self.image_shape))
    for i, block in enumerate(self.blocks):
      h = block(h)
      if i < len(self.downs):
        h = self.downs[i](h)
    mu, log_var = jnp.split(self.conv_out(nnx.silu(h)), 2, axis=-1)
    return mu.reshape(*lead, *self.latent), log_var.reshape(*lead, *self.latent)


class Decoder(nnx.Module):
  """z (..., H / f, W / f, latent_channels) -> x_hat (..., H, W, C)."""

  def __init__(self, latent_channels: int, image_shape: Sequence[int],
               channels: Sequence[int] = (64, 32), *, rngs: nnx.Rngs):
    self.latent = latent_shape(image_shape, latent_channels, channels)
    self.image_shape = tuple(int(d) for d in image_shape)
    channels = tuple(int(c) for c in channels)
    self.conv_in = _conv(latent_channels, channels[0], rngs)
    widths = (channels[0], *channels)
    self.blocks = nnx.List([ResBlock(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])
    self.ups = nnx.List([_conv(c, c, rngs) for c in channels[:-1]])
    self.conv_out = _conv(channels[-1], self.image_shape[-1], rngs)

  def __call__(self, z: jax.Array) -> jax.Array:
    if z.ndim < 3 or tuple(z.shape[-3:]) != self.latent:
      raise ValueError(f"z must end in the latent shape {self.latent}, got shape {z.shape}")
    lead = z.shape[:-3]
    h = self.conv_in(z.reshape(-1, *self.latent))
    for i, block in enumerate(self.blocks):
      h = block(h)
      if i < len(self.ups):
        h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)   # nearest x2
        h = self.ups[i](h)
    return self.conv_out(nnx.silu(h)).reshape(*lead, *self.image_shape)
