"""DCGAN generator and critic for images (Radford et al. 2016; Flax NNX, NHWC).

Generator: z (B, latent_dim) [+ Embed(y)] -> Linear -> seed (s, s', c_0) -> norm, ReLU ->
  (k - 1) x [ConvTranspose 4x4 stride 2, halving channels, norm, ReLU] ->
  ConvTranspose 4x4 stride 2 to C -> tanh, images in [-1, 1] of shape (B, H, W, C).
Critic: x -> Conv 4x4 stride 2 (channels), LeakyReLU(0.2) ->
  (k - 1) x [Conv 4x4 stride 2, doubling channels, norm, LeakyReLU(0.2)] ->
  phi(x) = flatten (s * s' * c) -> f(x) = w^T phi(x) + b [+ Embed(y)^T phi(x)], shape (B,).

The seed is s = H / 2^k, s' = W / 2^k with the largest k such that both
divide and s, s' >= 4: 4x4 for 8, 16, 32, 64; 7x7 for 28 (MNIST). Widths go
channels, 2 channels, ..., min(2^(k-1), 8) channels (the DCGAN ladder).

Normalisation is LayerNorm over each example's (H, W, C) with per-channel scale
and bias (`norm="layer"`) or nothing (`norm="none"`). Batch norm is absent on
purpose: the WGAN-GP gradient penalty (Gulrajani et al. 2017) is a per-example
gradient norm ||grad_x f(x_hat)||, which batch statistics invalidate (each output
would depend on the whole batch), and in the generator batch statistics would
make samples depend on the batch size and on the other latents in the batch.
With no mutable state, `research.nets.mlp.functional` gives (params, apply).

Class conditioning with num_classes = K > 0 (labels y in [0, K), required):
the generator concatenates a learned label embedding to z; the critic is a
projection discriminator (Miyato & Koyama 2018), f(x, y) = w^T phi(x) + b +
Embed(y)^T phi(x).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["DCGANGenerator", "DCGANCritic", "NORMS", "seed_shape"]

NORMS = ("layer", "none")


def seed_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
  """(s, s', k): the seed size H / 2^k, W / 2^k with the largest k leaving both >= 4 and exact.

  Raises ValueError unless k >= 1 (H and W even and at least 8).
  """
  if len(tuple(image_shape)) != 3 or any(int(d) < 1 for d in image_shape):
    raise ValueError(f"image_shape must be (H, W, C) with positive sizes, got {image_shape!r}")
  h, w, _ = (int(d) for d in image_shape)
  k = 0
  while h % 2 ** (k + 1) == 0 and w % 2 ** (k + 1) == 0 and min(h, w) // 2 ** (k + 1) >= 4:
    k += 1
  if k < 1:
    raise ValueError(f"image_shape {tuple(image_shape)}: H and W must be even and >= 8 "
                     f"(one stride-2 stage down to a seed of at least 4x4)")
  return h // 2 ** k, w // 2 ** k, k


def _check(norm: str, channels: int, num_classes: int) -> None:
  if norm not in NORMS:
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
  if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
    raise ValueError(f"channels must be an integer >= 1, got {channels!r}")
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
    raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")


def _norm(norm: str, features: int, rngs: nnx.Rngs):
  # GroupNorm with one group = LayerNorm over (H, W, C) per example, per-channel affine.
  return nnx.GroupNorm(features, num_groups=1, epsilon=1e-5, use_fast_variance=False,
                       rngs=rngs) if norm == "layer" else None


def _widths(channels: int, k: int) -> list[int]:
  """Channels at the resolutions from the image down to the seed: c, 2c, ..., capped at 8c."""
  return [channels * min(2 ** i, 8) for i in range(k)]


def _labels(y, num_classes: int, batch: int):
  if num_classes == 0:
    if y is not None:
      raise ValueError("y (class labels) needs a network built with num_classes > 0; "
                       "this one has num_classes=0")
    return None
  if y is None:
    raise ValueError(f"y (labels in [0, {num_classes})) is required when num_classes > 0")
  y = jnp.asarray(y)
  if y.shape != (batch,) or not jnp.issubdtype(y.dtype, jnp.integer):
    raise ValueError(f"y must be integer labels of shape (batch,) = ({batch},), "
                     f"got shape {y.shape} and dtype {y.dtype}")
  if not isinstance(y, jax.core.Tracer) and bool(jnp.any((y < 0) | (y >= num_classes))):
    raise ValueError(f"y must lie in [0, num_classes) = [0, {num_classes}), "
                     f"got min {int(y.min())} and max {int(y.max())}")
  return y


class DCGANGenerator(nnx.Module):
  """G(z, y) -> images in [-1, 1], shape (B, H, W, C) (see the module docstring)."""

  def __init__(self, latent_dim: int, image_shape: Sequence[int], *, channels: int = 64,
               norm: str = "layer", num_classes: int = 0, rngs: nnx.Rngs):
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
      raise ValueError(f"latent_dim must be an integer >= 1, got {latent_dim!r}")
    _check(norm, channels, num_classes)
    s_h, s_w, k = seed_shape(image_shape)
    self.latent_dim = latent_dim
    self.image_shape = tuple(int(d) for d in image_shape)
    self.num_classes = num_classes
    widths = _widths(channels, k)[::-1]            # seed -> just below the image
    self.seed = (s_h, s_w, widths[0])
    self.label_embed = (nnx.Embed(num_classes, latent_dim, rngs=rngs,
                                  embedding_init=nnx.initializers.normal(1.0))   # z's scale
                        if num_classes else None)
    z_dim = latent_dim * (2 if num_classes else 1)
    self.project = nnx.Linear(z_dim, s_h * s_w * widths[0], rngs=rngs)
    self.seed_norm = _norm(norm, widths[0], rngs)
    self.ups = nnx.List([nnx.ConvTranspose(a, b, (4, 4), strides=(2, 2), padding="SAME", rngs=rngs)
                         for a, b in zip(widths[:-1], widths[1:])])
    self.norms = nnx.List([_norm(norm, b, rngs) for b in widths[1:]]) if norm == "layer" else None
    self.out = nnx.ConvTranspose(widths[-1], self.image_shape[-1], (4, 4), strides=(2, 2),
                                 padding="SAME", rngs=rngs)

  def __call__(self, z: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """z (B, latent_dim), y (B,) ints in [0, num_classes) when conditional -> (B, H, W, C)."""
    if z.ndim != 2 or z.shape[-1] != self.latent_dim:
      raise ValueError(f"z must have shape (batch, latent_dim={self.latent_dim}), got {z.shape}")
    y = _labels(y, self.num_classes, z.shape[0])
    if y is not None:
      z = jnp.concatenate([z, self.label_embed(y).astype(z.dtype)], axis=-1)
    h = self.project(z).reshape(z.shape[0], *self.seed)
    if self.seed_norm is not None:
      h = self.seed_norm(h)
    h = nnx.relu(h)
    for i, up in enumerate(self.ups):
      h = up(h)
      if self.norms is not None:
        h = self.norms[i](h)
      h = nnx.relu(h)
    return jnp.tanh(self.out(h))


class DCGANCritic(nnx.Module):
  """f(x, y) -> (B,) logits or critic values; projection discriminator when num_classes > 0."""

  def __init__(self, image_shape: Sequence[int], *, channels: int = 64, norm: str = "none",
               num_classes: int = 0, rngs: nnx.Rngs):
    _check(norm, channels, num_classes)
    s_h, s_w, k = seed_shape(image_shape)
    self.image_shape = tuple(int(d) for d in image_shape)
    self.num_classes = num_classes
    widths = _widths(channels, k)                 # just below the image -> seed
    self.first = nnx.Conv(self.image_shape[-1], widths[0], (4, 4), strides=(2, 2),
                          padding=((1, 1), (1, 1)), rngs=rngs)
    self.downs = nnx.List([nnx.Conv(a, b, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)),
                                    rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])
    self.norms = nnx.List([_norm(norm, b, rngs) for b in widths[1:]]) if norm == "layer" else None
    features = s_h * s_w * widths[-1]
    self.out = nnx.Linear(features, 1, rngs=rngs)
    self.label_embed = (nnx.Embed(num_classes, features,
                                    embedding_init=nnx.initializers.normal(features ** -0.5),
                                    rngs=rngs) if num_classes else None)  # the scale of w

  def __call__(self, x: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """x (B, H, W, C), y (B,) ints in [0, num_classes) when conditional -> (B,)."""
    if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
      raise ValueError(f"x must have shape (batch, *image_shape) = (B, {self.image_shape}), "
                       f"got {x.shape}")
    y = _labels(y, self.num_classes, x.shape[0])
    h = nnx.leaky_relu(self.first(x), 0.2)
    for i, down in enumerate(self.downs):
      h = down(h)
      if self.norms is not None:
        h = self.norms[i](h)
      h = nnx.leaky_relu(h, 0.2)
    phi = h.reshape(x.shape[0], -1)
    out = self.out(phi)[:, 0]
    if y is not None:
      out = out + jnp.sum(self.label_embed(y).astype(phi.dtype) * phi, axis=-1)
    return out
