"""Fixed permutations of the event's last axis (the vector, or an image's channels).

A permutation pi of range(C) acts on the last axis, x_i = z_{pi(i)}; it is volume
preserving, so log|det| = 0 in both directions. Placed between coupling layers it
lets every dimension be transformed (Dinh et al. 2017 RealNVP reverse the channel
order; Kingma & Dhariwal 2018 Glow compare a fixed random shuffle with the learned
1x1 convolution of glow.py). The permutation is static structure on the dataclass,
never a parameter, so no optimiser can change it.
"""

from __future__ import annotations

import dataclasses
import numbers

import jax.numpy as jnp
import numpy as np

from research.flows.bijectors import Bijector, check_event, check_positive_int, check_event_shape

__all__ = ["Permute", "Reverse", "random_permutation"]


def random_permutation(seed: int, size: int) -> tuple:
  """A uniformly random permutation of range(size) as a tuple of ints, fixed by seed (numpy)."""
  check_positive_int(seed, "seed", minimum=0)
  check_positive_int(size, "size")
  return tuple(int(i) for i in np.random.default_rng(seed).permutation(size))


_event_shape = check_event_shape


@dataclasses.dataclass(frozen=True)
class Permute(Bijector):
  """x = z[..., permutation], z = x[..., argsort(permutation)]; log-det 0.

  event_shape: (D,) or (H, W, C); permutation: a tuple holding each of range(C) once.
  """
  event_shape: tuple
  permutation: tuple

  def __post_init__(self):
    shape = _event_shape(self.event_shape)
    size = shape[-1]
    try:
      perm = tuple(self.permutation)
    except TypeError:
      perm = None
    if (perm is None or any(isinstance(i, bool) or not isinstance(i, numbers.Integral)
                            for i in perm)
        or sorted(int(i) for i in perm) != list(range(size))):
      raise ValueError(f"permutation must be a permutation of range({size}) (the last axis of "
                       f"event_shape {shape}), got {self.permutation!r}")
    object.__setattr__(self, "event_shape", shape)
    object.__setattr__(self, "permutation", tuple(int(i) for i in perm))

  @property
  def event_ndim(self) -> int:
    return len(self.event_shape)

  @property
  def inverse_permutation(self) -> tuple:
    """argsort(permutation): z = x[..., inverse_permutation]."""
    return tuple(int(i) for i in np.argsort(self.permutation))

  def _zero_log_det(self, a):
    return jnp.zeros(a.shape[:a.ndim - self.event_ndim], a.dtype)

  def forward_and_log_det(self, params, z):
    del params
    check_event(z, self.event_shape, "z")
    return z[..., jnp.asarray(self.permutation)], self._zero_log_det(z)

  def inverse_and_log_det(self, params, x):
    del params
    check_event(x, self.event_shape, "x")
    return x[..., jnp.asarray(self.inverse_permutation)], self._zero_log_det(x)


@dataclasses.dataclass(frozen=True)
class Reverse(Permute):
  """The reversal of the last axis (RealNVP's channel flip): permutation = (C-1, ..., 0)."""
  permutation: tuple = dataclasses.field(init=False, default=())

  def __post_init__(self):
    shape = _event_shape(self.event_shape)
    object.__setattr__(self, "permutation", tuple(range(shape[-1] - 1, -1, -1)))
    super().__post_init__()
