"""Model families: plug-ins of the one trainer.

A family is a class built from the config with
  init(key) -> params                                  (a plain pytree)
  loss(params, batch, key) -> (scalar loss, metrics dict)
  sample(params, key, n, **sampler_options) -> (samples, stats dict)
and a static check_config(config) that raises ValueError before anything compiles.
"""

from __future__ import annotations

import importlib

_FAMILIES = {
    "flow_matching": "experiments.families.flow_matching:FlowMatching",
}


def names() -> tuple[str, ...]:
  return tuple(_FAMILIES)


def get(name: str):
  """The family class registered under `name`."""
  if name not in _FAMILIES:
    raise ValueError(f"config.family must be one of {names()}, got {name!r}")
  module, cls = _FAMILIES[name].split(":")
  return getattr(importlib.import_module(module), cls)
