"""Time-conditioned MLPs for low-dimensional data (Flax NNX, functional core).

`VelocityMLP` maps (x, t) -> a vector of x's shape: the network behind flow
matching velocities and diffusion eps/x0/v predictions on toy data.
`functional(module)` splits a module into a graph definition and a plain
parameter pytree, and returns `apply(params, x, t)`, so trainers, samplers and
checkpoints see only pure pytrees.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx


def sinusoidal_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
  """Sinusoidal features of a scalar time per example (Vaswani et al. 2017; DDPM).

  emb(t) = [cos(t f_0), ..., cos(t f_{h-1}), sin(t f_0), ..., sin(t f_{h-1})],
  f_j = max_period^(-j / h), h = dim // 2. `t` has shape () or (batch,);
  the result has shape t.shape + (dim,).
  """
  if dim < 2 or dim % 2:
    raise ValueError(f"dim must be an even integer >= 2, got {dim}")
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = jnp.asarray(t, jnp.float32)[..., None] * freqs
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class VelocityMLP(nnx.Module):
  """MLP f(x, t) -> R^dim with a sinusoidal time embedding concatenated to x.

  h_0 = [x, emb(time_scale * t)], h_{l+1} = act(W_l h_l + b_l), out = W_L h_L + b_L.
  `time_scale` maps the caller's time range onto the embedding's frequencies
  (e.g. 1000 for t in [0, 1]).
  """

  def __init__(self, dim: int, hidden: Sequence[int] = (256, 256, 256), *,
               time_dim: int = 64, time_scale: float = 1000.0,
               activation: Callable[[jax.Array], jax.Array] = nnx.silu, rngs: nnx.Rngs):
    if dim < 1:
      raise ValueError(f"dim must be >= 1, got {dim}")
    if not hidden or any(h < 1 for h in hidden):
      raise ValueError(f"hidden must be a non-empty list of positive widths, got {hidden}")
    self.time_dim = time_dim
    self.time_scale = time_scale
    self.activation = activation
    widths = [dim + time_dim, *hidden]
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])
    self.out = nnx.Linear(widths[-1], dim, rngs=rngs)

  def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
    h = jnp.concatenate([x, sinusoidal_embedding(self.time_scale * t, self.time_dim)], axis=-1)
    for layer in self.layers:
      h = self.activation(layer(h))
    return self.out(h)


def functional(module: nnx.Module):
  """Split an NNX module into (params, apply) with apply(params, *args) pure.

  params is a plain nested dict of arrays (checkpointable, vmappable, shardable);
  apply re-merges the static graph definition with the given params.
  """
  graphdef, state = nnx.split(module)
  params = nnx.to_pure_dict(state)

  def apply(p, *args, **kwargs):
    return nnx.merge(graphdef, nnx.State(p))(*args, **kwargs)

  return params, apply
