"""MADE masks and the masked autoregressive flow (Germain et al. 2015; Papamakarios et al. 2017).

MADE gives every input a degree m(x_i) in 1..D (its position in the autoregressive
order), every hidden unit a degree in [1, D - 1], and keeps a weight only where it
cannot carry information from an input to an output of equal or lower degree:

  input -> hidden / hidden -> hidden:  M[k, j] = 1[m(j) >= m(k)]
  hidden -> output:                    M[k, j] = 1[m(j) >  m(k)]

(Germain et al. 2015, Sec. 4), so output block i (the num_params transformer
parameters of x_i) depends only on the inputs before x_i in the order.

MAF (Papamakarios et al. 2017, Sec. 3) uses these as raw_i(x_{<i}) of an elementwise
transformer tau (transformers.Affine: x_i = z_i exp(alpha_i) + mu_i; or a spline):

  inverse (density, one pass):   z_i = tau^{-1}(x_i; raw_i(x_{<i})),
                                 log|det dz/dx| = sum_i log|d tau^{-1} / d x_i|
  forward (sampling, D passes):  x_i = tau(z_i; raw_i(x_{<i})) for i in the order,

the forward as one lax.fori_loop: after pass p every x_i of degree <= p is final.
Stack MAF layers with alternating `reverse` so each dimension conditions on the others.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from research.flows.bijectors import Bijector, check_event, check_positive_int, sum_event
from research.nets.mlp import functional

__all__ = ["made_masks", "MAF"]


def _check_hidden(hidden, allow_empty: bool) -> tuple:
  widths = tuple(hidden) if isinstance(hidden, (tuple, list)) else None
  if widths is None or (not widths and not allow_empty) or any(
      isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in widths):
    kind = "a tuple" if allow_empty else "a non-empty tuple"
    raise ValueError(f"hidden must be {kind} of positive integer widths, got {hidden!r}")
  return widths


def _check_order(order, num_inputs: int) -> tuple:
  order = tuple(int(i) for i in np.asarray(order).reshape(-1))
  if sorted(order) != list(range(num_inputs)):
    raise ValueError(f"order must be a permutation of range({num_inputs}), got {order!r}")
  return order


def made_masks(num_inputs: int, hidden: Sequence[int], num_params: int,
               order: Sequence[int]) -> list[np.ndarray]:
  """The binary MADE masks, one (fan_in, fan_out) array per layer (Germain et al. 2015).

  order: a permutation of range(num_inputs) listing the inputs in autoregressive order
  (order[0] has degree 1 and is conditioned on nothing). Hidden unit j of every layer
  has degree 1 + j mod max(D - 1, 1). Output unit i * num_params + p (parameter p of
  input i) has input i's degree and sees only inputs of strictly smaller degree.
  """
  num_inputs = check_positive_int(num_inputs, "num_inputs")
  num_params = check_positive_int(num_params, "num_params")
  hidden = _check_hidden(hidden, allow_empty=True)
  order = _check_order(order, num_inputs)
  degree_in = np.empty(num_inputs, np.int64)
  degree_in[list(order)] = np.arange(1, num_inputs + 1)
  degrees = [degree_in]
  for width in hidden:
    degrees.append(1 + np.arange(width) % max(num_inputs - 1, 1))
  masks = [prev[:, None] <= new[None, :] for prev, new in zip(degrees[:-1], degrees[1:])]
  degree_out = np.repeat(degree_in, num_params)
  masks.append(degrees[-1][:, None] < degree_out[None, :])
  return masks


class _MADENet(nnx.Module):
  """A MADE MLP: masked Linear layers, SiLU between them, a zero-initialised output layer."""

  def __init__(self, dim: int, hidden: tuple, num_params: int, order: tuple, rngs: nnx.Rngs):
    self.spec = (dim, hidden, num_params, order)
    widths = [dim, *hidden]
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])
    self.out = nnx.Linear(widths[-1], dim * num_params, kernel_init=nnx.initializers.zeros,
                          rngs=rngs)

  def __call__(self, x):
    masks = made_masks(*self.spec)
    for layer, mask in zip(self.layers, masks[:-1]):
      x = nnx.silu(x @ (layer.kernel[...] * mask) + layer.bias[...])
    return x @ (self.out.kernel[...] * masks[-1]) + self.out.bias[...]


@functools.lru_cache(maxsize=None)
def _made_apply(dim: int, hidden: tuple, num_params: int, order: tuple):
  """apply(params, x) of a MADE network (graph built once per structure, no init run)."""
  module = nnx.eval_shape(lambda: _MADENet(dim, hidden, num_params, order, nnx.Rngs(0)))
  return functional(module)[1]


@dataclasses.dataclass(frozen=True)
class MAF(Bijector):
  """A masked autoregressive flow layer over vectors of size dim (Papamakarios et al. 2017).

  transformer: transformers.Affine or splines.RationalQuadratic; hidden: MADE widths;
  reverse: condition in the order D-1, ..., 0 instead of 0, ..., D-1. params:
  {"made": the MADE network's plain parameter pytree}; at init the flow is the identity.
  """
  dim: int
  transformer: object
  hidden: tuple = (64, 64)
  reverse: bool = False

  def __post_init__(self):
    check_positive_int(self.dim, "dim")
    if not hasattr(self.transformer, "num_params"):
      raise ValueError(f"transformer must be an elementwise transformer (Affine, "
                       f"RationalQuadratic), got {self.transformer!r}")
    object.__setattr__(self, "hidden", _check_hidden(self.hidden, allow_empty=False))
    if not isinstance(self.reverse, bool):
      raise ValueError(f"reverse must be a bool, got {self.reverse!r}")

  @property
  def order(self) -> tuple:
    """The inputs in autoregressive order (order[0] is conditioned on nothing)."""
    order = tuple(range(self.dim))
    return order[::-1] if self.reverse else order

  def _spec(self):
    return (self.dim, self.hidden, self.transformer.num_params, self.order)

  def init(self, key, x):
    check_event(x, (self.dim,), "x")
    return {"made": functional(_MADENet(*self._spec(), nnx.Rngs(params=key)))[0]}

  def raw_params(self, params, x: jax.Array) -> jax.Array:
    """The MADE output raw(x) of shape (..., dim, num_params); raw_i depends on x_{<i}."""
    out = _made_apply(*self._spec())(params["made"], x)
    return out.reshape(*out.shape[:-1], self.dim, self.transformer.num_params)

  def inverse_and_log_det(self, params, x):
    check_event(x, (self.dim,), "x")
    z, log_det = self.transformer.inverse(self.raw_params(params, x), x)
    return z, sum_event(log_det, 1)

  def forward_and_log_det(self, params, z):
    check_event(z, (self.dim,), "z")

    def one_pass(_, carry):
      raw = self.raw_params(params, carry[0])
      x, log_det = self.transformer.forward(raw, z)
      return x, sum_event(log_det, 1)

    # Pass p fixes every x_i of degree <= p, so after dim passes x is exact, and so is the
    # last pass's log-determinant (its raw parameters saw every x_i of degree < dim).
    init = (jnp.zeros_like(z), jnp.zeros(z.shape[:-1], z.dtype))
    return jax.lax.fori_loop(0, self.dim, one_pass, init)
