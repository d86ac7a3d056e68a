"""Render benchmark results: a fixed-width text table and a JSON file."""

from __future__ import annotations

import json
import os
import platform

import jax


def machine() -> dict:
  dev = jax.devices()[0]
  return {"platform": dev.platform, "device_kind": dev.device_kind, "num_devices": jax.device_count(),
          "cpu_count": os.cpu_count(), "python": platform.python_version(), "jax": jax.__version__,
          "processor": platform.processor() or platform.machine()}


def _fmt(v) -> str:
  if isinstance(v, float):
    return f"{v:.4g}"
  return "-" if v is None else str(v)


def table(columns: list[str], rows: list[dict]) -> str:
  cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
  widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c)
            for i, c in enumerate(columns)]
  line = lambda vals: "| " + " | ".join(v.rjust(w) for v, w in zip(vals, widths)) + " |"
  sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
  return "\n".join([line(columns), sep, *(line(r) for r in cells)])


def write(result: dict, out_dir: str, name: str) -> str:
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f"{name}.json")
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
  return path
