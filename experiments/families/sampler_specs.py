"""The sampler registry as the families read it: `diffusion(name)` and `flow(name)` -> SamplerSpec.

The registry lives with the samplers (`research.diffusion.samplers.spec`,
`research.flow.ode.spec`; the SamplerSpec type of research/registry.py): name, fn,
nfe, options, prediction (the network output the sampler needs, e.g. "x0" for
consistency sampling), stochastic, default_spacing, takes_num_steps, and
check_options / parse_options / is_stochastic / count_nfe. This module only
forwards to it, turning its errors into ValueErrors that name the field asked
about. While a research module has no `spec` yet, a thin stand-in with the same
methods is derived from its older entry points (`samplers.get` / `samplers.nfe`,
`ode.nfe`), so families and config checks need no change when it lands.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable, Mapping

from research.diffusion import samplers as diffusion_samplers
from research.flow import ode

# Keyword-only sampler arguments the family sets itself (not user options).
_SET_BY_FAMILY = ("num_steps", "prediction")
_FLOW_OPTIONS = {"dopri5": ("rtol", "atol", "max_steps", "dt0")}


def _parse_value(text: str):
  low = text.strip().lower()
  if low in ("true", "false"):
    return low == "true"
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text.strip()


def parse_options_string(text: str) -> dict:
  """"k=v,k2=v2" -> {k: v, k2: v2} with bools, ints and floats converted ("" -> {})."""
  out = {}
  for item in filter(None, (s.strip() for s in text.split(","))):
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
      raise ValueError(f"sampler options must look like key=value,key2=value2, got {item!r}")
    out[key.strip()] = _parse_value(value)
  return out


@dataclasses.dataclass(frozen=True)
class _FallbackSpec:
  """A stand-in SamplerSpec (same fields and methods) for a module without `spec`."""
  name: str
  fn: Callable
  nfe: Callable | None
  options: Mapping
  prediction: str | None = None
  stochastic: bool = False
  default_spacing: str | None = None
  takes_num_steps: bool = True

  @property
  def option_names(self) -> tuple:
    return tuple(self.options)

  def check_options(self, options) -> dict:
    options = dict(options or {})
    for key in options:
      if key not in self.options:
        raise ValueError(f"unknown option {key!r} for sampler {self.name!r}; valid options: "
                         f"{list(self.options)}")
    return options

  def parse_options(self, options) -> dict:
    if isinstance(options, str):
      options = parse_options_string(options)
    return self.check_options(options)

  def is_stochastic(self, **options) -> bool:
    return bool(self.stochastic or options.get("eta", 0.0) or options.get("sde", False))

  def count_nfe(self, num_steps, **options):
    return None if self.nfe is None else int(self.nfe(num_steps, **options))


def _keyword_options(fn) -> dict:
  params = inspect.signature(fn).parameters.values()
  return {p.name: p.default for p in params
          if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _SET_BY_FAMILY}


def diffusion(name, field: str = "sampler"):
  """The SamplerSpec of diffusion sampler `name`; ValueError naming `field` and the valid names."""
  if name not in tuple(diffusion_samplers.NAMES):
    raise ValueError(f"{field} must be one of {tuple(diffusion_samplers.NAMES)}, got {name!r}")
  if hasattr(diffusion_samplers, "spec"):
    return diffusion_samplers.spec(name)
  fn = diffusion_samplers.get(name)
  return _FallbackSpec(
      name, fn, lambda n, **o: diffusion_samplers.nfe(name, n, **o), _keyword_options(fn),
      prediction="x0" if name == "consistency" else None,
      stochastic=name in ("ddpm", "euler_ancestral", "langevin", "pc"))


def flow(name, field: str = "sampler"):
  """The SamplerSpec of flow ODE solver `name`; ValueError naming `field` and the valid names."""
  names = tuple(getattr(ode, "NAMES", ode.SOLVERS))
  if name not in names:
    raise ValueError(f"{field} must be one of {names}, got {name!r}")
  if hasattr(ode, "spec"):
    return ode.spec(name)
  adaptive = name == "dopri5"
  fn = ode.get_solver(name)
  return _FallbackSpec(
      name, fn, None if adaptive else (lambda n, **o: ode.nfe(name, n)),
      {k: None for k in _FLOW_OPTIONS.get(name, ())}, takes_num_steps=not adaptive)


def check_options(spec, options, field: str) -> dict:
  """spec.parse_options(options) (a "k=v,..." string or a mapping), errors naming `field`."""
  if options is None:
    options = {}
  elif not isinstance(options, str):
    options = options.to_dict() if hasattr(options, "to_dict") else dict(options)
  try:
    return dict(spec.parse_options(options))
  except (ValueError, TypeError) as e:
    raise ValueError(f"{field} {options!r} are invalid for sampler {spec.name!r}: {e}") from None
