"""Model families: plug-ins of the one trainer, registered by name.

The contract a family implements (`Family`, `Phase`, `SampleRequest`) is written in
experiments/families/protocol.py. `get(name)` returns the class registered under
config.family; `register(name, cls_or_path)` adds one.
"""

from __future__ import annotations

import importlib

from experiments.families.protocol import Family, Phase, SampleRequest  # noqa: F401

_FAMILIES = {
    "flow_matching": "experiments.families.flow_matching:FlowMatching",
    "vae": "experiments.families.vae:VAE",
    "gan": "experiments.families.gan:GAN",
    "consistency": "experiments.families.consistency:Consistency",
    "diffusion": "experiments.families.diffusion:Diffusion",
    "autoregressive": "experiments.families.autoregressive:Autoregressive",
    "flow": "experiments.families.normalizing_flow:NormalizingFlow",
    "lcm": "experiments.families.lcm:LCM",
    "autoencoder": "experiments.families.autoencoder:AutoEncoder",
    "ebm": "experiments.families.ebm:EBM",
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
