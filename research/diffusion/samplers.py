"""Diffusion samplers: the one registry every caller reads, and the public names.

Time convention (schedules.py): continuous t in [0, 1], t = 1 is noise, t = 0 is
clean data, x_t = alpha(t) x0 + sigma(t) eps. Discrete DDPM schedules are
wrapped as continuous time (t_n = (n + 1)/T, the network sees T t - 1).

    samplers.get(name)(key, model_fn, x_T, schedule, num_steps=N, **options) -> x0

is every sampler's call (the contract of research/diffusion/contract.py);
`NAMES` lists the registered names, `spec(name)` is the registry entry
(research/registry.py SamplerSpec: exact NFE, options, required prediction,
whether it is stochastic, default spacing), `nfe(name, num_steps, **options)`
the exact number of network evaluations, `check_options` / `parse_options`
validate options (e.g. from the command line) before anything is compiled.

Where the samplers live: DDPM and DDIM in ddpm_ddim.py; DPM-Solver,
DPM-Solver++ and UniPC in dpm_solvers.py; Euler, Heun and Euler ancestral in
karras.py; annealed Langevin and predictor-corrector in stochastic.py;
multistep consistency sampling in consistency.py; LCM's sampler in lcm.py;
the named presets (dpmpp_2m, dpmpp_2m_karras, euler_a: a sampler with other
defaults, `PRESETS`) in presets.py. The step grid they share is
built in grid.py, the model adapters are in adapters.py. Defaults and their
measured accuracy: docs/samplers.md.

A new sampler is one function and one `@register(...)` next to it (contract.py).
"""
from __future__ import annotations

from typing import Mapping

# Sampler modules register themselves on import (order = the order of NAMES).
from research.diffusion import ddpm_ddim, dpm_solvers  # noqa: F401  (registration)
from research.diffusion import consistency, karras, stochastic  # noqa: F401  (registration)
from research.diffusion import lcm  # noqa: F401  (registration)
from research.diffusion import presets  # noqa: F401  (named presets, after their bases)
from research.diffusion.adapters import batch_time, predict, predict_x0_eps
from research.diffusion.adapters import check_prediction
from research.diffusion.contract import (PRESETS, REGISTRY, check_x, per_example_normal, register,
                                         register_preset)
from research.diffusion import grid as grid_lib
from research.diffusion.ddpm_ddim import DDIM_SPACING, ddim, ddim_nfe, ddpm, ddpm_nfe
from research.diffusion.grid import (DEFAULT_SPACING, StepGrid, array_module, check_num_steps,
                                     check_timesteps, default_t_end, is_concrete,
                                     resolve_t_end, sampling_grid, to_device)
from research.registry import check_bool

__all__ = [
    "REGISTRY", "NAMES", "PRESETS", "get", "spec", "nfe", "check_options", "parse_options",
    "register", "register_preset", "grid_for", "steps_for_nfe",
    # Re-exported helpers (their homes: grid.py, adapters.py, contract.py, ddpm_ddim.py).
    "DEFAULT_SPACING", "DDIM_SPACING", "StepGrid", "sampling_grid", "check_timesteps",
    "default_t_end", "resolve_t_end", "check_num_steps", "check_prediction", "check_bool",
    "is_concrete", "array_module", "to_device", "per_example_normal", "check_x", "batch_time",
    "predict", "predict_x0_eps", "ddpm", "ddpm_nfe", "ddim", "ddim_nfe",
]


def __getattr__(attr):
  # NAMES follows run-time registrations.
  if attr == "NAMES":
    return REGISTRY.names()
  raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def get(name: str):
  """The sampler registered under `name`; ValueError listing every valid name."""
  return REGISTRY.get(name)


def spec(name: str):
  """The registry entry (SamplerSpec) of `name`; ValueError listing every valid name."""
  return REGISTRY.spec(name)


def nfe(name: str, num_steps: int, **options) -> int:
  """The exact number of network evaluations of sampler `name` with these options."""
  return REGISTRY.nfe(name, num_steps, **options)


def check_options(name: str, options: Mapping) -> dict:
  """The checked options of sampler `name`; ValueError for an unknown option (with the
  valid ones) or a bad value."""
  return REGISTRY.spec(name).check_options(options)


def parse_options(name: str, options: str | Mapping) -> dict:
  """"k=v,k2=v2" (or a mapping with string values) -> typed, checked options of `name`."""
  return REGISTRY.spec(name).parse_options(options)


def grid_for(name: str, schedule, num_steps: int, **options) -> StepGrid:
  """The StepGrid that sampler `name` builds for these options (pass it back as grid=)."""
  return grid_lib.for_spec(REGISTRY.spec(name), schedule, num_steps, **options)


def steps_for_nfe(name: str, budget: int, **options) -> int | None:
  """The largest num_steps whose exact NFE (`nfe`) fits `budget` network evaluations, or
  None if even one step does not (e.g. Heun: 2N - 1 <= budget)."""
  best = None
  for n in range(1, int(budget) + 1):
    if REGISTRY.nfe(name, n, **options) <= budget:
      best = n
  return best
