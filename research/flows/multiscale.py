"""Multi-scale image flows: squeeze, split (factoring out) and flatten.

Dinh et al. 2017 (RealNVP, Sec. 3.6) and Kingma & Dhariwal 2018 (Glow, Sec. 3):
in the inverse (data -> latent) direction an image is squeezed (each 2x2 block of
pixels becomes 4 channels), transformed by couplings, and half of its channels are
factored out straight to the latent while the other half continues at the next,
coarser scale. All three layers here are volume preserving reshapes except through
Split's inner flow, whose log-det is Split's:

  Squeeze  (H, W, C) -> (H/2, W/2, 4C)    log-det 0
  Split    (H, W, C) -> (H W C,) = [flatten(x[..., :C//2]), flatten(inner^{-1}(x[..., C//2:]))]
  Flatten  event_shape -> (prod(event_shape),)   log-det 0

A two-level flow, in Chain order (layers[0] nearest the latent, so the inverse runs
the list from the end):

  Chain([Split((4, 4, 4), Chain([couplings at (2, 2, 8) ..., Squeeze((4, 4, 2))])),
         couplings at (4, 4, 4) ..., Squeeze((8, 8, 1))])

The factored-out half gets the base distribution as it is (no learned prior here).
A single-scale image flow ends in Flatten so that every image flow has a flat latent.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from research.flows.bijectors import Bijector, Chain, check_event, check_event_shape

__all__ = ["Squeeze", "Split", "Flatten"]


_event_shape = check_event_shape


def _data_event_shape(bijector):
  """The data event shape a bijector declares (a Chain's is its last layer's), else None."""
  while isinstance(bijector, Chain):
    bijector = bijector.layers[-1]
  shape = getattr(bijector, "event_shape", None)
  return None if shape is None else tuple(shape)


def _zero_log_det(a, event_ndim: int):
  return jnp.zeros(a.shape[:a.ndim - event_ndim], a.dtype)


class _Reshape(Bijector):
  """A shape-changing bijector with a fixed data event shape and a fixed latent one."""
  event_shape: tuple

  @property
  def event_ndim(self) -> int:
    return len(self.event_shape)

  @property
  def latent_shape(self) -> tuple:
    raise NotImplementedError

  def latent_event_ndim(self) -> int:
    return len(self.latent_shape)

  def inverse_shape(self, event_shape):
    if tuple(event_shape) != self.event_shape:
      raise ValueError(f"event_shape {tuple(event_shape)} does not match this layer's data "
                       f"event shape {self.event_shape}")
    return self.latent_shape

  def forward_shape(self, event_shape):
    if tuple(event_shape) != self.latent_shape:
      raise ValueError(f"event_shape {tuple(event_shape)} does not match this layer's latent "
                       f"event shape {self.latent_shape}")
    return self.event_shape


@dataclasses.dataclass(frozen=True)
class Squeeze(_Reshape):
  """Space-to-depth in the inverse direction: (H, W, C) -> (H/2, W/2, 4C) (RealNVP, Glow).

  z[i, j, 4c + 2a + b] = x[2i + a, 2j + b, c] (Glow's channel order); forward is the
  depth-to-space inverse. Log-det 0.
  """
  event_shape: tuple

  def __post_init__(self):
    shape = _event_shape(self.event_shape, rank=3)
    if shape[0] % 2 or shape[1] % 2:
      raise ValueError(f"event_shape must have even H and W to squeeze 2x2 blocks, got {shape}")
    object.__setattr__(self, "event_shape", shape)

  @property
  def latent_shape(self) -> tuple:
    h, w, c = self.event_shape
    return (h // 2, w // 2, 4 * c)

  def inverse_and_log_det(self, params, x):
    del params
    check_event(x, self.event_shape, "x")
    h, w, c = self.event_shape
    lead = x.shape[:-3]
    y = x.reshape(*lead, h // 2, 2, w // 2, 2, c)
    n = len(lead)
    y = jnp.moveaxis(y, (n + 1, n + 3), (n + 3, n + 4))  # (..., h/2, w/2, c, 2, 2)
    return y.reshape(*lead, *self.latent_shape), _zero_log_det(x, 3)

  def forward_and_log_det(self, params, z):
    del params
    check_event(z, self.latent_shape, "z")
    h, w, c = self.event_shape
    lead = z.shape[:-3]
    y = z.reshape(*lead, h // 2, w // 2, c, 2, 2)
    n = len(lead)
    y = jnp.moveaxis(y, (n + 3, n + 4), (n + 1, n + 3))  # (..., h/2, 2, w/2, 2, c)
    return y.reshape(*lead, *self.event_shape), _zero_log_det(z, 3)


@dataclasses.dataclass(frozen=True)
class Flatten(_Reshape):
  """event_shape -> (prod(event_shape),) in the inverse direction (row-major); log-det 0."""
  event_shape: tuple

  def __post_init__(self):
    object.__setattr__(self, "event_shape", _event_shape(self.event_shape))

  @property
  def latent_shape(self) -> tuple:
    return (math.prod(self.event_shape),)

  def inverse_and_log_det(self, params, x):
    del params
    check_event(x, self.event_shape, "x")
    lead = x.shape[:x.ndim - self.event_ndim]
    return x.reshape(*lead, *self.latent_shape), _zero_log_det(x, self.event_ndim)

  def forward_and_log_det(self, params, z):
    del params
    check_event(z, self.latent_shape, "z")
    return z.reshape(*z.shape[:-1], *self.event_shape), _zero_log_det(z, 1)


@dataclasses.dataclass(frozen=True)
class Split(_Reshape):
  """Factor out half the channels; the rest go through `inner` (RealNVP Sec. 3.6, Glow).

  Inverse, x of event shape (H, W, C), k = C // 2:
    z = concat(flatten(x[..., :k]), flatten(inner.inverse(x[..., k:]))),  z of shape (H W C,)
    log|det dz/dx| = inner's log-det.
  inner takes data events (H, W, C - k) (it may squeeze and split again); params
  are inner's params, init(key, x) = inner.init(key, x[..., k:]).
  """
  event_shape: tuple
  inner: Bijector

  def __post_init__(self):
    shape = _event_shape(self.event_shape, rank=3)
    if shape[-1] < 2:
      raise ValueError(f"event_shape {shape}: Split needs >= 2 channels to factor out half "
                       f"(squeeze first)")
    object.__setattr__(self, "event_shape", shape)
    if not isinstance(self.inner, Bijector):
      raise ValueError(f"inner must be a Bijector, got {self.inner!r}")
    in_shape = self.inner_event_shape
    own = _data_event_shape(self.inner)
    if self.inner.event_ndim != 3 or own not in (None, in_shape):
      raise ValueError(f"inner must take data events of shape {in_shape} (the kept channels of "
                       f"{shape}), got {self.inner!r}")
    try:
      latent = tuple(self.inner.inverse_shape(in_shape))
    except ValueError as e:
      raise ValueError(f"inner must take data events of shape {in_shape}: {e}") from e
    if math.prod(latent) != math.prod(in_shape) or len(latent) != self.inner.latent_event_ndim():
      raise ValueError(f"inner maps {in_shape} to latent events {latent}: it must keep the "
                       f"dimension {math.prod(in_shape)}")

  @property
  def num_out(self) -> int:
    """k = C // 2: the channels factored out to the latent."""
    return self.event_shape[-1] // 2

  @property
  def inner_event_shape(self) -> tuple:
    h, w, c = self.event_shape
    return (h, w, c - self.num_out)

  @property
  def inner_latent_shape(self) -> tuple:
    return tuple(self.inner.inverse_shape(self.inner_event_shape))

  @property
  def latent_shape(self) -> tuple:
    return (math.prod(self.event_shape),)

  def init(self, key, x):
    check_event(x, self.event_shape, "x")
    return self.inner.init(key, x[..., self.num_out:])

  def inverse_and_log_det(self, params, x):
    check_event(x, self.event_shape, "x")
    lead = x.shape[:-3]
    z_in, log_det = self.inner.inverse_and_log_det(params, x[..., self.num_out:])
    z_out = x[..., :self.num_out].reshape(*lead, -1)
    return jnp.concatenate([z_out, z_in.reshape(*lead, -1)], -1), log_det

  def forward_and_log_det(self, params, z):
    check_event(z, self.latent_shape, "z")
    h, w, _ = self.event_shape
    lead = z.shape[:-1]
    cut = h * w * self.num_out
    x_out = z[..., :cut].reshape(*lead, h, w, self.num_out)
    x_in, log_det = self.inner.forward_and_log_det(
        params, z[..., cut:].reshape(*lead, *self.inner_latent_shape))
    return jnp.concatenate([x_out, x_in], -1), log_det
