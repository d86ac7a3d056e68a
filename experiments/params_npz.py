"""Parameter pytrees as single .npz files with flattened dotted keys.

A nested dict {"conv1": {"kernel": a, "bias": b}} is stored as the arrays
"conv1.kernel" and "conv1.bias" (integer dict keys, e.g. from nnx.List, become
their decimal strings). Small, dependency-free and readable by numpy alone: the
format of the committed digits-classifier checkpoint and of local Inception
weights.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

__all__ = ["flatten_params", "unflatten_params", "save_params_npz", "load_params_npz",
           "check_params_match"]


def _flatten(params, prefix):
  if not isinstance(params, Mapping):
    raise ValueError(f"params must be a nested dict of arrays, got {type(params).__name__}")
  flat = {}
  for key, value in params.items():
    key = str(key)
    if not key or "." in key:
      raise ValueError(f"params keys must be non-empty and contain no '.', got {key!r}")
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(_flatten(value, f"{name}."))
    else:
      flat[name] = value
  return flat


def flatten_params(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Nested dict of arrays -> {"a.b.c": np.ndarray}. Keys may not contain '.'."""
  return {name: np.asarray(value) for name, value in _flatten(params, "").items()}


def unflatten_params(flat: Mapping[str, Any]) -> dict:
  """{"a.b.c": array} -> nested dict; all-digit keys become ints (as nnx.to_pure_dict gives)."""
  nested: dict = {}
  for name, value in flat.items():
    parts = [int(p) if p.isdigit() else p for p in name.split(".")]
    node = nested
    for part in parts[:-1]:
      node = node.setdefault(part, {})
      if not isinstance(node, dict):
        raise ValueError(f"flat key {name!r} nests under a leaf array")
    node[parts[-1]] = value
  return nested


def save_params_npz(path: str, params: Mapping[str, Any]) -> str:
  """Write params to `path` (".npz" appended if missing); returns the file name written."""
  if not path.endswith(".npz"):
    path = path + ".npz"
  directory = os.path.dirname(path)
  if directory:
    os.makedirs(directory, exist_ok=True)
  np.savez(path, **flatten_params(params))
  return path


def load_params_npz(path: str) -> dict:
  """Read a nested params dict from `path` (".npz" appended if missing)."""
  if not path.endswith(".npz"):
    path = path + ".npz"
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no parameter file at {path!r}")
  with np.load(path, allow_pickle=False) as data:
    return unflatten_params({name: np.asarray(data[name]) for name in data.files})


def check_params_match(params: Mapping[str, Any], expected: Mapping[str, Any], *,
                       what: str = "params") -> None:
  """Raise ValueError listing missing, unexpected and mis-shaped keys of params vs expected."""
  got = {k: tuple(np.shape(v)) for k, v in _flatten(params, "").items()}
  want = {k: tuple(v.shape) for k, v in _flatten(expected, "").items()}  # or ShapeDtypeStructs
  missing = sorted(set(want) - set(got))
  unexpected = sorted(set(got) - set(want))
  wrong = sorted(f"{k}: {got[k]} (expected {want[k]})" for k in set(got) & set(want)
                 if got[k] != want[k])
  if missing or unexpected or wrong:
    def show(items):
      return ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
    raise ValueError(
        f"{what} do not match the expected key layout: missing [{show(missing)}];"
        f" unexpected [{show(unexpected)}]; wrong shapes [{show(wrong)}]")
