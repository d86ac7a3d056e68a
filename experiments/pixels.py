"""Pixel ranges of image data: model space [0, 1] ("unit") or [-1, 1] ("symmetric").

Shared by the in-memory sets (experiments/data.py) and the tfds sets
(experiments/data_tfds.py), so neither imports the other for it.
"""

from __future__ import annotations

import jax.numpy as jnp

PIXEL_RANGES = ("unit", "symmetric")


def check_pixel_range(pixel_range: str) -> str:
  """Return pixel_range if it is one of PIXEL_RANGES, else raise ValueError."""
  if pixel_range not in PIXEL_RANGES:
    raise ValueError(f"pixel_range must be one of {PIXEL_RANGES}, got {pixel_range!r}")
  return pixel_range


def from_unit(u, pixel_range: str):
  """Map [0, 1] images to model space: u ("unit") or 2 u - 1 ("symmetric")."""
  check_pixel_range(pixel_range)
  return u if pixel_range == "unit" else 2.0 * u - 1.0


def to_unit(x, pixel_range: str):
  """Map model-space images back to [0, 1], clipped: x or (x + 1) / 2 ("symmetric")."""
  check_pixel_range(pixel_range)
  u = x if pixel_range == "unit" else (x + 1.0) / 2.0
  return jnp.clip(u, 0.0, 1.0)
