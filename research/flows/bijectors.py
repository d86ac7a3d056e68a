"""The bijector interface: invertible maps with log-determinants over plain parameter pytrees.

Direction convention (as distrax and the flow literature's "generative direction"):
`forward` maps the base (latent) space to the data space, x = G(z); `inverse` maps
data to latent, z = G^{-1}(x). Log-determinants are those of the map applied:

  forward_and_log_det(params, z) -> (x, log|det dx/dz|)
  inverse_and_log_det(params, x) -> (z, log|det dz/dx|)

so log p_X(x) = log p_Z(G^{-1}(x)) + log|det dG^{-1}/dx| (change of variables), and
forward log-det(z) = -inverse log-det(G(z)).

Every bijector is a frozen dataclass holding static structure only (sizes, masks,
flags); its parameters are a plain pytree made by `init(key, x)` from a batch of
*data-space* inputs x of shape (batch, *event_shape) (ActNorm initialises from the
batch; the rest use it for shapes). Methods are pure functions of (params, array),
so they jit, vmap and differentiate. Arrays are (*batch, *event_shape) with
`event_ndim` trailing event axes; log-dets have the batch shape.

Shape-changing bijectors (squeeze, multi-scale split) say so through
`inverse_shape(event_shape)` (data -> latent event shape) and `forward_shape`.

Composition: `Chain(layers)` applies layers[0] first in the forward (z -> x)
direction, so the inverse (x -> z) runs layers[-1] first; `Inverse(b)` swaps the
directions of b. Chain.init threads the data batch through the inverse direction,
layers[-1] first, so each data-dependent layer sees the activations it will see.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Bijector", "Chain", "Inverse", "sum_event", "check_event", "check_event_shape",
           "check_positive_int"]


def sum_event(a: jax.Array, event_ndim: int) -> jax.Array:
  """Sum the last event_ndim axes (elementwise log-dets -> one per example)."""
  if event_ndim == 0:
    return a
  return jnp.sum(a, axis=tuple(range(-event_ndim, 0)))


def check_positive_int(value, name: str, minimum: int = 1) -> int:
  """value as an int >= minimum, else ValueError naming `name`."""
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
  return value


def check_event_shape(value, rank: int | None = None, name: str = "event_shape") -> tuple:
  """value as a non-empty tuple of positive ints (of length rank, if given), else ValueError."""
  try:
    shape = tuple(value)
  except TypeError:
    shape = None
  if not shape or (rank is not None and len(shape) != rank) or any(
      isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1 for d in shape):
    what = {1: "a (D,) tuple", 3: "an (H, W, C) tuple"}.get(rank, "a non-empty tuple")
    raise ValueError(f"{name} must be {what} of positive ints, got {value!r}")
  return tuple(int(d) for d in shape)


def check_event(x, event_shape: Sequence[int], name: str = "x") -> None:
  """ValueError naming `name` unless x's trailing axes equal event_shape."""
  event_shape = tuple(event_shape)
  shape = tuple(getattr(x, "shape", ()))
  n = len(event_shape)
  if len(shape) < n or (n and shape[-n:] != event_shape):
    raise ValueError(f"{name} must end in the event shape {event_shape}, got shape {shape}")


class Bijector:
  """Base class. Subclasses implement init, forward_and_log_det, inverse_and_log_det.

  Attributes: event_ndim (trailing event axes of the data-space input, default 1).
  """
  event_ndim: int = 1

  def init(self, key: jax.Array, x: jax.Array):
    """Parameters (a plain pytree) from a data-space batch x (batch, *event_shape)."""
    del key, x
    return {}

  def forward_and_log_det(self, params, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    raise NotImplementedError

  def inverse_and_log_det(self, params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    raise NotImplementedError

  def forward(self, params, z: jax.Array) -> jax.Array:
    """x = G(z)."""
    return self.forward_and_log_det(params, z)[0]

  def inverse(self, params, x: jax.Array) -> jax.Array:
    """z = G^{-1}(x)."""
    return self.inverse_and_log_det(params, x)[0]

  def inverse_shape(self, event_shape: tuple) -> tuple:
    """The latent event shape of a data event shape (identity unless the layer reshapes)."""
    return tuple(event_shape)

  def forward_shape(self, event_shape: tuple) -> tuple:
    """The data event shape of a latent event shape."""
    return tuple(event_shape)

  def latent_event_ndim(self) -> int:
    """Trailing event axes of the latent-space output of inverse (event_ndim unless reshaped)."""
    return self.event_ndim


@dataclasses.dataclass(frozen=True)
class Chain(Bijector):
  """Composition: forward = layers[-1] o ... o layers[0] (layers[0] applied first to z).

  params: a tuple with one entry per layer. Log-dets add. Each layer's event
  shape is what the previous one (in the inverse direction) produced.
  """
  layers: tuple

  def __post_init__(self):
    layers = tuple(self.layers)
    if not layers:
      raise ValueError("layers must be a non-empty sequence of bijectors, got ()")
    for i, layer in enumerate(layers):
      if not isinstance(layer, Bijector):
        raise ValueError(f"layers[{i}] must be a Bijector, got {layer!r}")
    object.__setattr__(self, "layers", layers)

  @property
  def event_ndim(self) -> int:
    return self.layers[-1].event_ndim

  def latent_event_ndim(self) -> int:
    return self.layers[0].latent_event_ndim()

  def _check_params(self, params):
    if not isinstance(params, (tuple, list)) or len(params) != len(self.layers):
      got = len(params) if isinstance(params, (tuple, list)) else type(params).__name__
      raise ValueError(f"params of a Chain must be a tuple with one entry per layer "
                       f"({len(self.layers)}), got {got}")

  def init(self, key, x):
    keys = jax.random.split(key, len(self.layers))
    params = [None] * len(self.layers)
    for i in reversed(range(len(self.layers))):
      params[i] = self.layers[i].init(keys[i], x)
      if i:
        x = self.layers[i].inverse(params[i], x)
    return tuple(params)

  def forward_and_log_det(self, params, z):
    self._check_params(params)
    total = 0.0
    for layer, p in zip(self.layers, params):
      z, log_det = layer.forward_and_log_det(p, z)
      total = total + log_det
    return z, total

  def inverse_and_log_det(self, params, x):
    self._check_params(params)
    total = 0.0
    for layer, p in zip(reversed(self.layers), reversed(tuple(params))):
      x, log_det = layer.inverse_and_log_det(p, x)
      total = total + log_det
    return x, total

  def inverse_shape(self, event_shape):
    for layer in reversed(self.layers):
      event_shape = layer.inverse_shape(event_shape)
    return tuple(event_shape)

  def forward_shape(self, event_shape):
    for layer in self.layers:
      event_shape = layer.forward_shape(event_shape)
    return tuple(event_shape)


@dataclasses.dataclass(frozen=True)
class Inverse(Bijector):
  """The inverse bijector: forward and inverse of `bijector` swapped (params unchanged).

  init(key, x) hands x to the wrapped bijector's init as it is: right for layers whose
  init reads only shapes and that keep them; a shape-changing layer (Squeeze) or a
  data-dependent one (ActNorm) under Inverse should be initialised on its own.
  """
  bijector: Bijector

  def __post_init__(self):
    if not isinstance(self.bijector, Bijector):
      raise ValueError(f"bijector must be a Bijector, got {self.bijector!r}")

  @property
  def event_ndim(self) -> int:
    return self.bijector.latent_event_ndim()

  def latent_event_ndim(self) -> int:
    return self.bijector.event_ndim

  def init(self, key, x):
    return self.bijector.init(key, x)

  def forward_and_log_det(self, params, z):
    return self.bijector.inverse_and_log_det(params, z)

  def inverse_and_log_det(self, params, x):
    return self.bijector.forward_and_log_det(params, x)

  def inverse_shape(self, event_shape):
    return self.bijector.forward_shape(event_shape)

  def forward_shape(self, event_shape):
    return self.bijector.inverse_shape(event_shape)
