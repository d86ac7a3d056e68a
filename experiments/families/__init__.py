"""Model families: plug-ins of the one trainer.

A family is a class built from the config with
  init(key) -> params                                  (a plain pytree)
  loss(params, batch, key) -> (scalar loss, metrics dict)
  sample(params, key, n, **sampler_options) -> (samples, stats dict)
and a static check_config(config) that raises ValueError before anything compiles.
Optional: phases() -> [trainer.Phase] for several optimizers / alternating updates
(GANs), after_step(params, step) -> params to refresh frozen parameter groups,
evaluate(params, key, dataset) -> dict of final metrics, and
figures(params, key, workdir, step) -> list of PNG paths written at the end.
"""

from __future__ import annotations

import importlib

_FAMILIES = {
    "flow_matching": "experiments.families.flow_matching:FlowMatching",
    "vae": "experiments.families.vae:VAE",
    "gan": "experiments.families.gan:GAN",
    "consistency": "experiments.families.consistency:Consistency",
    "diffusion": "experiments.families.diffusion:Diffusion",
}


def names() -> tuple[str, ...]:
  return tuple(_FAMILIES)


def register(name: str, target) -> None:
  """Register a family class (or a "module:Class" path) under `name`."""
  _FAMILIES[name] = target


def get(name: str):
  """The family class registered under `name`."""
  if name not in _FAMILIES:
    raise ValueError(f"config.family must be one of {names()}, got {name!r}")
  target = _FAMILIES[name]
  if not isinstance(target, str):
    return target
  module, cls = target.split(":")
  return getattr(importlib.import_module(module), cls)
