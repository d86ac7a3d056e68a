"""Conditioner networks: x_a -> the transformer parameters of x_b (Flax NNX, functional core).

A conditioner spec is a small frozen dataclass (hashable, static) naming the
network; `build(spec, in_shape, out_dim)` gives the NNX module, `init(spec, key,
in_shape, out_dim)` its plain parameter pytree and `apply(spec, in_shape,
out_dim)` the pure function apply(params, x) -> (..., *spatial, out_dim).

  MLP(hidden=(64, 64)):  vectors (..., d_in) -> (..., out_dim); SiLU between layers.
  Conv(hidden=64):       images (..., H, W, C_in) -> (..., H, W, out_dim): Glow's
                         3x3 conv, 1x1 conv, 3x3 conv with ReLU between (Kingma &
                         Dhariwal 2018, Sec. 3.3).

The last layer is initialised to zero (weights and bias), so the transformer's raw
parameters start at 0 -- the identity for every transformer of this package -- and
a freshly initialised flow is the identity map (Glow, Sec. 3.3).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from research.nets.mlp import functional

__all__ = ["MLP", "Conv", "init", "apply", "build"]


@dataclasses.dataclass(frozen=True)
class MLP:
  """A fully connected conditioner for vectors; hidden: the widths of its hidden layers."""
  hidden: tuple = (64, 64)

  def __post_init__(self):
    hidden = tuple(self.hidden)
    if not hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
      raise ValueError(f"hidden must be a non-empty tuple of positive widths, got {self.hidden!r}")
    object.__setattr__(self, "hidden", hidden)


@dataclasses.dataclass(frozen=True)
class Conv:
  """Glow's convolutional conditioner for images; hidden: its channel width."""
  hidden: int = 64

  def __post_init__(self):
    if isinstance(self.hidden, bool) or not isinstance(self.hidden, int) or self.hidden < 1:
      raise ValueError(f"hidden must be a positive integer width, got {self.hidden!r}")


def _zero_linear(a: int, b: int, rngs) -> nnx.Linear:
  return nnx.Linear(a, b, kernel_init=nnx.initializers.zeros, rngs=rngs)


class _MLPNet(nnx.Module):
  def __init__(self, d_in: int, out_dim: int, hidden: Sequence[int], rngs: nnx.Rngs):
    widths = [d_in, *hidden]
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])
    self.out = _zero_linear(widths[-1], out_dim, rngs)

  def __call__(self, x):
    for layer in self.layers:
      x = nnx.silu(layer(x))
    return self.out(x)


class _ConvNet(nnx.Module):
  def __init__(self, c_in: int, out_dim: int, hidden: int, rngs: nnx.Rngs):
    pad = ((1, 1), (1, 1))
    self.conv1 = nnx.Conv(c_in, hidden, (3, 3), padding=pad, rngs=rngs)
    self.conv2 = nnx.Conv(hidden, hidden, (1, 1), rngs=rngs)
    self.out = nnx.Conv(hidden, out_dim, (3, 3), padding=pad, kernel_init=nnx.initializers.zeros,
                        rngs=rngs)

  def __call__(self, x):
    lead, image = x.shape[:-3], x.shape[-3:]
    h = x.reshape(-1, *image)
    h = jax.nn.relu(self.conv2(jax.nn.relu(self.conv1(h))))
    out = self.out(h)
    return out.reshape(*lead, *out.shape[1:])


def build(spec, in_shape: tuple, out_dim: int, key: jax.Array) -> nnx.Module:
  """The NNX module of `spec` mapping inputs of event shape in_shape to out_dim features."""
  rngs = nnx.Rngs(params=key)
  if isinstance(spec, MLP):
    if len(in_shape) != 1:
      raise ValueError(f"an MLP conditioner takes vectors, got event shape {in_shape}")
    return _MLPNet(in_shape[0], out_dim, spec.hidden, rngs)
  if isinstance(spec, Conv):
    if len(in_shape) != 3:
      raise ValueError(f"a Conv conditioner takes (H, W, C) images, got event shape {in_shape}")
    return _ConvNet(in_shape[-1], out_dim, spec.hidden, rngs)
  raise ValueError(f"conditioner must be conditioners.MLP or conditioners.Conv, got {spec!r}")


def init(spec, key: jax.Array, in_shape: tuple, out_dim: int):
  """The plain parameter pytree of a freshly built conditioner."""
  return functional(build(spec, tuple(in_shape), out_dim, key))[0]


@functools.lru_cache(maxsize=None)
def apply(spec, in_shape: tuple, out_dim: int):
  """apply(params, x) of the conditioner (graph built once per spec and shapes, no init run)."""
  module = nnx.eval_shape(lambda: build(spec, tuple(in_shape), out_dim, jax.random.key(0)))
  return functional(module)[1]


def zeros_like_output(x: jax.Array, out_dim: int) -> jax.Array:
  """An all-zero conditioner output for inputs x (the identity's raw parameters)."""
  return jnp.zeros((*x.shape[:-1], out_dim), x.dtype)
