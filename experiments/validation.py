"""Config and argument checks: one helper per kind of value, each raising ValueError naming the field.

Every helper takes the value and the name to report (e.g. "config.optim.lr") and
returns the value unchanged when it is acceptable, so checks read as one line:

    validation.positive_int(config.train.num_steps, "config.train.num_steps")
    validation.choice(v.likelihood, vae_loss.LIKELIHOODS, "config.vae.likelihood")

Booleans are not integers here (True is not a step count), and integers are
numbers. `require(config, "a.b")` reads a dotted field, refusing a missing one.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable

_MISSING = object()


def is_int(value) -> bool:
  """True for Python / numpy integers, False for bools."""
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
  """True for finite-or-not real numbers (ints and floats), False for bools."""
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def require(config, dotted: str, default: Any = _MISSING):
  """config[a][b] for dotted "a.b"; ValueError "config.a.b is missing" (or `default`)."""
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node:
      if default is not _MISSING:
        return default
      raise ValueError(f"config.{dotted} is missing")
    node = node[part]
  return node


def integer(value, name: str) -> int:
  if not is_int(value):
    raise ValueError(f"{name} must be an integer, got {value!r}")
  return value


def positive_int(value, name: str) -> int:
  if not is_int(value) or value < 1:
    raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
  return value


def non_negative_int(value, name: str) -> int:
  if not is_int(value) or value < 0:
    raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
  return value


def positive_number(value, name: str) -> float:
  if not is_number(value) or not value > 0 or not math.isfinite(value):
    raise ValueError(f"{name} must be a positive number, got {value!r}")
  return value


def non_negative_number(value, name: str) -> float:
  if not is_number(value) or not value >= 0 or not math.isfinite(value):
    raise ValueError(f"{name} must be a number >= 0, got {value!r}")
  return value


def number_in(value, name: str, low: float, high: float, *, low_open: bool = False,
              high_open: bool = True) -> float:
  """A number in the interval [low, high) by default; low_open / high_open choose the ends."""
  ok = is_number(value) and (value > low if low_open else value >= low) and (
      value < high if high_open else value <= high)
  if not ok:
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    raise ValueError(f"{name} must be in {interval}, got {value!r}")
  return value


def choice(value, choices: Iterable, name: str):
  choices = tuple(choices)
  if not isinstance(value, str) and not is_number(value) or value not in choices:
    raise ValueError(f"{name} must be one of {choices}, got {value!r}")
  return value


def boolean(value, name: str) -> bool:
  if not isinstance(value, bool):
    raise ValueError(f"{name} must be true or false, got {value!r}")
  return value


def positive_ints(values, name: str) -> tuple:
  """A non-empty sequence of integers >= 1 (layer widths, eval k's)."""
  if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
    raise ValueError(f"{name} must be a non-empty list of integers >= 1, got {values!r}")
  values = tuple(values)
  if not values or not all(is_int(v) and v >= 1 for v in values):
    raise ValueError(f"{name} must be a non-empty list of integers >= 1, got {values!r}")
  return values


def non_empty_string(value, name: str) -> str:
  if not isinstance(value, str) or not value:
    raise ValueError(f"{name} must be a non-empty string, got {value!r}")
  return value
