"""One registry type for every kind of sampler: a named function with its metadata.

A `SamplerSpec` is what a caller needs to know about a sampler without running it:
the function, its exact number of network evaluations for (num_steps, options), its
options (name, default, how to parse one from the command line, how to check a
value), the prediction type it requires, whether it draws noise for given options,
its default step spacing and whether it takes a step count at all (adaptive
solvers do not). A `Registry` maps names to specs; samplers register themselves
where they are defined with the `Registry.register` decorator.

Used by research/diffusion/samplers.py (diffusion samplers, kind "sampler") and
research/flow/ode.py (flow ODE solvers, kind "solver"). Command-line option
strings are "k=v,k2=v2": values are comma-free (a tuple of floats is written
"1.0;0.5;0.1" or "1.0 0.5 0.1"), bools are "true"/"false"/"1"/"0".

Option checks accept traced values unchanged (they are checked only when
concrete), so a sampler may validate its options inside `jax.jit`.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Callable, Iterable, Mapping

import jax
import numpy as np

__all__ = [
    "Option", "SamplerSpec", "Registry",
    "parse_bool", "parse_floats", "optional", "refuse_text",
    "check_bool", "check_int", "check_choice", "check_real",
    "flag", "integer", "choice", "real", "infer_option", "keyword_options", "as_options",
    "split_options_text",
]


# ----------------------------------------------------------------------------
# Parsing command-line strings.
# ----------------------------------------------------------------------------
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def parse_bool(text: str) -> bool:
  """"true"/"1"/"yes" -> True, "false"/"0"/"no" -> False (any case), else ValueError."""
  low = str(text).strip().lower()
  if low in _TRUE:
    return True
  if low in _FALSE:
    return False
  raise ValueError(f"expected true/false/1/0, got {text!r}")


def parse_floats(text: str) -> tuple:
  """"1.0;0.5;0.1" or "1.0 0.5 0.1" (optionally in brackets) -> (1.0, 0.5, 0.1)."""
  body = str(text).strip().strip("[]()")
  items = [s for s in body.replace(";", " ").split() if s]
  if not items:
    raise ValueError(f"expected floats separated by ';' or spaces, got {text!r}")
  return tuple(float(s) for s in items)


def optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
  """parse, except that "none" (any case) or "" gives None."""

  def parse_optional(text: str):
    if str(text).strip().lower() in ("none", ""):
      return None
    return parse(text)

  return parse_optional


def refuse_text(text: str):
  """The parser of options that cannot come from the command line (arrays, objects)."""
  raise ValueError(f"this option takes an array or object, not the string {text!r}")


# ----------------------------------------------------------------------------
# Checking values (traced values pass unchecked).
# ----------------------------------------------------------------------------
def _traced(value) -> bool:
  return isinstance(value, jax.core.Tracer)


def check_bool(name: str, value) -> bool:
  """value must be a Python (or numpy) bool, else ValueError naming it."""
  if not isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{name} must be a bool, got {name}={value!r}")
  return bool(value)


def check_int(name: str, value, minimum: int | None = None, allowed=None) -> int:
  """value must be a Python int (not a bool), >= minimum and in `allowed` when given."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{name} must be a Python int, got {name}={value!r}")
  if allowed is not None and value not in allowed:
    raise ValueError(f"{name} must be one of {list(allowed)}, got {name}={value!r}")
  if minimum is not None and value < minimum:
    raise ValueError(f"{name} must be a Python int >= {minimum}, got {name}={value!r}")
  return int(value)


def check_choice(name: str, value, choices):
  """value must be one of `choices`."""
  if value not in choices:
    raise ValueError(f"unknown {name}={value!r}; valid: {list(choices)}")
  return value


def check_real(name: str, value, *, low=None, high=None, low_open=False, none_ok=False):
  """A concrete value as a Python float in [low, high] ((low, high] with low_open); a
  traced one unchanged; None if none_ok."""
  if value is None and none_ok:
    return None
  if _traced(value):
    return value
  try:
    x = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a number, got {name}={value!r}") from None
  if math.isnan(x) or (low is not None and (x <= low if low_open else x < low)) \
      or (high is not None and x > high):
    lo = "" if low is None else f"{'(' if low_open else '['}{low}, "
    hi = "inf)" if high is None else f"{high}]"
    raise ValueError(f"{name} must lie in {lo or '(-inf, '}{hi}, got {name}={value!r}")
  return x


# ----------------------------------------------------------------------------
# Options.
# ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Option:
  """One sampler option: its name, default, command-line parser and value check.

  parse: command-line string -> value. check: value -> validated value, raising
  ValueError that names the option (None: any value).
  """
  name: str
  default: Any
  parse: Callable[[str], Any]
  check: Callable[[Any], Any] | None = None
  doc: str = ""

  def validate(self, value):
    return value if self.check is None else self.check(value)


def flag(name: str, default: bool, doc: str = "") -> Option:
  """A bool option ("true"/"false"/"1"/"0" on the command line)."""
  return Option(name, default, parse_bool, lambda v: check_bool(name, v), doc)


def integer(name: str, default: int, *, minimum: int | None = None, allowed=None,
            doc: str = "") -> Option:
  """An int option (>= minimum, in `allowed`)."""
  return Option(name, default, int,
                lambda v: check_int(name, v, minimum=minimum, allowed=allowed), doc)


def choice(name: str, default: str, choices, doc: str = "") -> Option:
  """A string option with a fixed set of values."""
  choices = tuple(choices)
  return Option(name, default, str, lambda v: check_choice(name, v, choices), doc)


def real(name: str, default, *, low=None, high=None, low_open=False, doc: str = "") -> Option:
  """A float option in [low, high] ((low, high] with low_open); default None means optional."""
  none_ok = default is None
  parse = optional(float) if none_ok else float
  return Option(name, default, parse,
                lambda v: check_real(name, v, low=low, high=high, low_open=low_open,
                                     none_ok=none_ok), doc)


def infer_option(name: str, default) -> Option:
  """An unchecked Option whose parser follows the type of `default` (old-style registrations)."""
  if isinstance(default, bool):
    parse = parse_bool
  elif isinstance(default, int):
    parse = int
  elif isinstance(default, float):
    parse = float
  elif isinstance(default, str) or default is None:
    parse = optional(_parse_auto) if default is None else str
  else:
    parse = refuse_text
  return Option(name, default, parse)


def _parse_auto(text: str):
  """bool, int, float or string, whichever the text reads as."""
  try:
    return parse_bool(text)
  except ValueError:
    pass
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return str(text).strip()


# ----------------------------------------------------------------------------
# Specs and the registry.
# ----------------------------------------------------------------------------
def split_options_text(text: str) -> dict:
  """'k=v,k2=v2' -> {"k": "v", "k2": "v2"} (strings); ValueError for a malformed or repeated item."""
  out = {}
  for item in filter(None, (s.strip() for s in text.split(","))):
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
      raise ValueError(f"options must look like key=value,key2=value2, got {item!r}")
    if key in out:
      raise ValueError(f"option {key!r} is given twice in {text!r}")
    out[key] = value.strip()
  return out


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
  """A registered sampler and its metadata (see the module docstring).

  nfe(num_steps, **options) -> exact network evaluations (None when adaptive);
  stochastic: a bool or a function of the options; kind: "sampler", "solver", ...
  (error messages); extra_options: accept options not listed, unchecked (old-style
  registrations of functions taking **options); grid: the kind's step-grid rule,
  opaque to the registry (research.diffusion.grid.GridRule for diffusion samplers);
  requires: the kind of model the sampler needs beyond the contract (None: any model;
  "consistency_distilled": a consistency-distilled network such as an LCM student,
  which a plain diffusion family refuses).
  """
  name: str
  fn: Callable
  nfe: Callable[..., int | None]
  options: Mapping[str, Option]
  prediction: str | None = None
  stochastic: bool | Callable[..., bool] = False
  default_spacing: str | None = None
  takes_num_steps: bool = True
  kind: str = "sampler"
  extra_options: bool = False
  grid: Any = None
  requires: str | None = None

  @property
  def option_names(self) -> tuple[str, ...]:
    return tuple(self.options)

  @property
  def defaults(self) -> dict:
    """{option name: default}."""
    return {k: o.default for k, o in self.options.items()}

  def check_options(self, options: Mapping) -> dict:
    """The options with checked values; ValueError for an unknown option (listing the
    valid ones), a bad value, or a prediction other than the one the sampler needs."""
    out = {}
    for key, value in dict(options or {}).items():
      if key not in self.options:
        if self.extra_options:
          out[key] = value
          continue
        raise ValueError(f"unknown option {key!r} for {self.kind} {self.name!r}; valid options:"
                         f" {list(self.options)}")
      out[key] = self.options[key].validate(value)
    need = self.prediction
    if need is not None and out.get("prediction", need) != need:
      raise ValueError(f"the {self.kind} {self.name!r} needs prediction={need!r}, got"
                       f" prediction={out['prediction']!r}")
    return out

  def parse_options(self, options: str | Mapping) -> dict:
    """"k=v,k2=v2" or {k: "v" or value} -> typed, checked dict (strings parsed per option)."""
    if isinstance(options, str):
      options = split_options_text(options)
    parsed = {}
    for key, value in dict(options or {}).items():
      if key in self.options and isinstance(value, str):
        value = _parse_one(self.options[key], value)
      parsed[key] = value
    return self.check_options(parsed)

  def is_stochastic(self, **options) -> bool:
    """Whether the sampler draws noise with these options."""
    if callable(self.stochastic):
      return bool(self.stochastic(**{**self.defaults, **self.check_options(options)}))
    return bool(self.stochastic)

  def count_nfe(self, num_steps, **options) -> int | None:
    """Exact network evaluations for num_steps steps and these options (None: adaptive)."""
    if self.takes_num_steps:
      check_int("num_steps", num_steps, minimum=1)
    out = self.nfe(num_steps, **self.check_options(options))
    return None if out is None else int(out)


def _parse_one(option: Option, text: str):
  try:
    return option.parse(text)
  except (TypeError, ValueError) as e:
    raise ValueError(f"cannot parse option {option.name}={text!r}: {e}") from None


def as_options(options) -> dict:
  """{name: Option} from Options (or a mapping of them); ValueError for a non-Option or a repeat."""
  if isinstance(options, Mapping):
    options = options.values()
  out = {}
  for o in options:
    if not isinstance(o, Option):
      raise ValueError(f"options must be Option entries, got {o!r}")
    if o.name in out:
      raise ValueError(f"option {o.name!r} is listed twice")
    out[o.name] = o
  return out


class Registry:
  """Names -> SamplerSpec, in registration order; `kind` names the entries in errors."""

  def __init__(self, kind: str):
    self.kind = kind
    self._specs: dict[str, SamplerSpec] = {}

  def register(self, name: str, *, nfe: Callable, options: Iterable[Option] = (),
               prediction: str | None = None, stochastic=False,
               default_spacing: str | None = None, takes_num_steps: bool = True, **extra):
    """Decorator: registers the function under `name` (replacing an entry) and returns it."""

    def decorate(fn):
      self.add(SamplerSpec(name, fn, nfe, as_options(options), prediction, stochastic,
                           default_spacing, takes_num_steps, kind=self.kind, **extra))
      return fn

    return decorate

  def add(self, spec: SamplerSpec) -> SamplerSpec:
    """Adds (or replaces) an entry."""
    if not isinstance(spec, SamplerSpec):
      raise ValueError(f"spec must be a SamplerSpec, got {spec!r}")
    if not isinstance(spec.name, str) or not spec.name:
      raise ValueError(f"name must be a non-empty string, got name={spec.name!r}")
    if not callable(spec.fn) or not callable(spec.nfe):
      raise ValueError(f"fn and nfe of {self.kind} {spec.name!r} must be callable")
    spec = dataclasses.replace(spec, options=as_options(spec.options), kind=self.kind)
    self._specs[spec.name] = spec
    return spec

  def remove(self, name: str) -> None:
    self.spec(name)
    del self._specs[name]

  def names(self) -> tuple:
    return tuple(self._specs)

  def spec(self, name: str) -> SamplerSpec:
    """The entry `name`; ValueError listing every valid name."""
    if not isinstance(name, str) or name not in self._specs:
      raise ValueError(f"unknown {self.kind} name={name!r}; valid names: {list(self._specs)}")
    return self._specs[name]

  def get(self, name: str) -> Callable:
    return self.spec(name).fn

  def nfe(self, name: str, num_steps, **options) -> int | None:
    return self.spec(name).count_nfe(num_steps, **options)

  def __contains__(self, name) -> bool:
    return name in self._specs


def keyword_options(fn, exclude=("num_steps",)) -> tuple[dict, bool]:
  """({name: default} of fn's keyword-only parameters, whether it takes **kwargs)."""
  params = inspect.signature(fn).parameters.values()
  found = {p.name: (None if p.default is inspect.Parameter.empty else p.default)
           for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in exclude}
  return found, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
