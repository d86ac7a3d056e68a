"""MLP generator and critic for GANs on low-dimensional data (Flax NNX).

`Generator` maps latent codes z (B, latent_dim) to samples (B, *data_shape);
`Critic` maps samples (B, *data_shape) to one scalar per example, shape (B,):
a logit for the Jensen-Shannon GANs, an unbounded critic value for WGANs.
The critic has no normalisation layers, so each output depends on its own
example only -- required by the WGAN-GP per-example gradient penalty
(Gulrajani et al. 2017 recommend no batch norm in the critic). Both use a
smooth or leaky activation (SiLU / LeakyReLU 0.2) so gradients w.r.t. the input
do not die. Use `research.nets.mlp.functional` for (params, apply).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["ACTIVATIONS", "Generator", "Critic"]


def _leaky_relu(x: jax.Array) -> jax.Array:
  return jax.nn.leaky_relu(x, negative_slope=0.2)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "silu": nnx.silu, "leaky_relu": _leaky_relu, "relu": nnx.relu, "tanh": jnp.tanh}


def _activation(name: str):
  if name not in ACTIVATIONS:
    raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {name!r}")
  return ACTIVATIONS[name]


def _check_hidden(hidden) -> None:
  if not hidden or any(h < 1 for h in hidden):
    raise ValueError(f"hidden must be a non-empty list of positive widths, got {hidden}")


class Generator(nnx.Module):
  """G(z) = W_L act(... act(W_1 z + b_1) ...) + b_L, reshaped to data_shape (linear output)."""

  def __init__(self, latent_dim: int, data_shape: Sequence[int], hidden: Sequence[int] = (256, 256),
               *, activation: str = "silu", rngs: nnx.Rngs):
    if latent_dim < 1:
      raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
    _check_hidden(hidden)
    self.data_shape = tuple(data_shape)
    self.activation = _activation(activation)
    widths = [latent_dim, *hidden]
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])
    self.out = nnx.Linear(widths[-1], math.prod(self.data_shape), rngs=rngs)

  def __call__(self, z: jax.Array) -> jax.Array:
    h = z
    for layer in self.layers:
      h = self.activation(layer(h))
    return self.out(h).reshape(z.shape[0], *self.data_shape)


class Critic(nnx.Module):
  """f(x) = w^T act(... act(W_1 flatten(x) + b_1) ...) + b: one scalar per example, shape (B,)."""

  def __init__(self, data_shape: Sequence[int], hidden: Sequence[int] = (256, 256), *,
               activation: str = "leaky_relu", rngs: nnx.Rngs):
    _check_hidden(hidden)
    self.activation = _activation(activation)
    widths = [math.prod(tuple(data_shape)), *hidden]
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])
    self.out = nnx.Linear(widths[-1], 1, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = x.reshape(x.shape[0], -1)
    for layer in self.layers:
      h = self.activation(layer(h))
    return self.out(h)[:, 0]
