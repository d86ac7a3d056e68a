"""The diffusion sampler contract: the registry, the decorator that registers a sampler, per-example noise.

Time convention (schedules.py): continuous t in [0, 1], t = 1 is noise, t = 0 is
clean data, x_t = alpha(t) x0 + sigma(t) eps. Every registered sampler is called as

    sampler(key, model_fn, x_T, schedule, *, num_steps, prediction="eps", **options) -> x0

* model_fn(x, t) -> prediction of x's shape, t of shape (batch,); prediction is
  one of adapters.PREDICTIONS (models are adapted with research/diffusion/adapters.py).
* The loop is one `lax.scan`, so compile time does not grow with num_steps (a
  static Python int). float32 throughout.
* Noise for example i at step n is normal(fold_in(fold_in(key, n), i))
  (`per_example_normal`): results do not depend on the batch size.
  Deterministic samplers ignore key.

A sampler is one function and one registration, next to each other:

    @register("name", nfe=lambda num_steps, **_: num_steps, options=(...,),
              grid=grid.GridRule("time_quadratic"), stochastic=False)
    def name(key, model_fn, x_T, schedule, *, num_steps, grid, prediction, ...):

The registered (public) sampler checks the options against their `Option`
entries (unknown ones are refused with the list of valid ones), fills in the
defaults, builds the StepGrid once from the grid options and the sampler's
GridRule (research/diffusion/grid.py) and calls the function with `grid=`; its
signature, as `inspect` shows it, lists every option with its default.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Callable

import jax
import jax.numpy as jnp

from research import registry
from research.diffusion import adapters
from research.diffusion import grid as grid_lib

__all__ = ["REGISTRY", "PRESETS", "register", "register_preset", "per_example_normal", "check_x"]

REGISTRY = registry.Registry("sampler")
PRESETS: dict = {}     # preset name -> (base sampler name, {option: preset default})
_POSITIONAL = ("key", "model_fn", "x_T", "schedule")


def per_example_normal(key, step, shape_like):
  """Standard normal noise for one step, independent of the batch size.

  Example i at step n gets normal(fold_in(fold_in(key, n), i), shape[1:]), so
  the first k examples of a batch of B > k equal a batch of k with the same key.
  `shape_like` is an array (its shape and dtype are used) or a shape tuple.
  """
  if hasattr(shape_like, "shape"):
    shape = tuple(shape_like.shape)
    dtype = getattr(shape_like, "dtype", jnp.float32)
  else:
    shape = tuple(shape_like)
    dtype = jnp.float32
  if not jnp.issubdtype(dtype, jnp.floating):
    dtype = jnp.float32
  step_key = jax.random.fold_in(key, step)
  per_example = lambda i: jax.random.normal(
      jax.random.fold_in(step_key, i), shape[1:], dtype)
  return jax.vmap(per_example)(jnp.arange(shape[0]))


def check_x(x_T):
  """x_T as a float32 array of shape (batch, ...), else ValueError naming it."""
  x_T = jnp.asarray(x_T)
  if x_T.ndim < 1 or not jnp.issubdtype(x_T.dtype, jnp.floating):
    raise ValueError(f"x_T must be a float array of shape (batch, ...), got shape "
                     f"{x_T.shape} and dtype {x_T.dtype}")
  return x_T.astype(jnp.float32)


def register(name: str, sampler: Callable | None = None, nfe_fn: Callable | None = None, *,
             nfe: Callable | None = None, options=(), prediction: str | None = None,
             stochastic=False, grid: grid_lib.GridRule | None = None,
             requires: str | None = None):
  """Registers a diffusion sampler; a decorator, or the older call form.

  Decorator: `@register(name, nfe=..., options=(Option, ...), prediction=...,
  stochastic=..., grid=GridRule(...))` on a function
  fn(key, model_fn, x_T, schedule, *, num_steps, [grid,] <options not consumed
  by the grid>); returns the public sampler (module docstring).
  Call form: `register(name, sampler, nfe_fn)` adds a function that follows the
  contract as it is, nfe_fn(num_steps, **options) -> int; its options are its
  keyword-only parameters (unchecked; any option if it takes **options).
  requires: what model the sampler needs beyond the contract (SamplerSpec.requires,
  e.g. "consistency_distilled" for LCM sampling); families refuse what they lack.
  """
  if sampler is not None or nfe_fn is not None:
    if not callable(sampler) or not callable(nfe_fn):
      raise ValueError("sampler and nfe_fn must be callable")
    _register_function(name, sampler, nfe_fn)
    return sampler
  if not callable(nfe):
    raise ValueError(f"nfe must be callable (num_steps, **options) -> int, got nfe={nfe!r}")

  def decorate(fn):
    spec = registry.SamplerSpec(name, fn, nfe, registry.as_options(options), prediction,
                                stochastic, grid.spacing if grid is not None else None,
                                grid=grid, requires=requires)
    return REGISTRY.add(dataclasses.replace(spec, fn=_public(spec))).fn

  return decorate


def _register_function(name, sampler, nfe_fn):
  found, any_options = registry.keyword_options(sampler)
  options = [registry.infer_option(k, v) for k, v in found.items()]
  options = [dataclasses.replace(adapters.PREDICTION, default=o.default)
             if o.name == "prediction" else o for o in options]
  count = lambda num_steps, prediction=None, **kw: nfe_fn(num_steps, **kw)
  REGISTRY.add(registry.SamplerSpec(name, sampler, count, registry.as_options(options),
                                    extra_options=any_options))


def _public(spec):
  """The registered sampler around fn: options checked, defaults filled, grid built."""
  fn, rule = spec.fn, spec.grid
  consumed = tuple(k for k in rule.option_names if k in spec.options) if rule else ()
  expected = {"num_steps", *(k for k in spec.options if k not in consumed)}
  expected |= {"grid"} if rule is not None else set()
  found, _ = registry.keyword_options(fn, exclude=())
  if set(found) != expected:
    raise ValueError(f"sampler {spec.name!r}: keyword-only parameters {sorted(found)} must be"
                     f" {sorted(expected)} (its options, with the grid options as grid=)")
  defaults = spec.defaults

  @functools.wraps(fn)
  def sampler(key, model_fn, x_T, schedule, *, num_steps, **options):
    num_steps = grid_lib.check_num_steps(num_steps)
    options = {**defaults, **spec.check_options(options)}
    if rule is not None:
      options["grid"] = grid_lib.build(schedule, num_steps, rule,
                                       **{k: options.pop(k) for k in consumed})
    return fn(key, model_fn, x_T, schedule, num_steps=num_steps, **options)

  P = inspect.Parameter
  sampler.__signature__ = inspect.Signature(
      [P(k, P.POSITIONAL_OR_KEYWORD) for k in _POSITIONAL] + [P("num_steps", P.KEYWORD_ONLY)]
      + [P(k, P.KEYWORD_ONLY, default=v) for k, v in defaults.items()])
  return sampler


_GRID_SHAPING = ("spacing", "t_end", "rho", "steps_offset", "index_rule")


def register_preset(name: str, base: str, doc: str, **defaults):
  """Registers `name` as sampler `base` with other option defaults (a named preset).

  The entry is `base`'s with these defaults (each checked by its Option; every
  option stays overridable), the same exact NFE, stochasticity, required prediction
  and requirements, and its GridRule's spacing set to the preset's; so `NAMES`,
  `spec`, `nfe`, `parse_options`, `grid_for` and the families see it as any other
  sampler. `PRESETS[name]` records (base, defaults). Returns the public sampler,
  which calls base's public sampler with {**defaults, **options} (with `grid=` or
  `timesteps=` given, without the preset's spacing, t_end, rho, steps_offset, index_rule).
  """
  spec = REGISTRY.spec(base)
  unknown = sorted(set(defaults) - set(spec.options))
  if unknown:
    raise ValueError(f"preset {name!r}: {unknown} are not options of sampler {base!r}; valid"
                     f" options: {list(spec.options)}")
  options = {k: dataclasses.replace(o, default=o.validate(defaults[k])) if k in defaults else o
             for k, o in spec.options.items()}
  fixed = {k: options[k].default for k in defaults}
  base_fn, base_nfe = spec.fn, spec.nfe

  def sampler(key, model_fn, x_T, schedule, *, num_steps, **given):
    preset = fixed
    if given.get("grid") is not None or given.get("timesteps") is not None:
      # Explicit times replace the preset's grid options, as they replace the base's.
      preset = {k: v for k, v in fixed.items() if k not in _GRID_SHAPING}
    return base_fn(key, model_fn, x_T, schedule, num_steps=num_steps, **{**preset, **given})

  def nfe(num_steps, **given):
    return base_nfe(num_steps, **{**fixed, **given})

  P = inspect.Parameter
  sampler.__signature__ = inspect.Signature(
      [P(k, P.POSITIONAL_OR_KEYWORD) for k in _POSITIONAL] + [P("num_steps", P.KEYWORD_ONLY)]
      + [P(k, P.KEYWORD_ONLY, default=o.default) for k, o in options.items()])
  sampler.__name__ = sampler.__qualname__ = name.replace("+", "p")
  sampler.__doc__ = f"{doc}\n\nPreset of {base!r} with {fixed}; {base!r}:\n{base_fn.__doc__ or ''}"
  grid = spec.grid
  if grid is not None and fixed.get("spacing") is not None:
    grid = dataclasses.replace(grid, spacing=fixed["spacing"])
  entry = dataclasses.replace(spec, name=name, fn=sampler, nfe=nfe, options=options, grid=grid,
                              default_spacing=grid.spacing if grid is not None
                              else spec.default_spacing)
  PRESETS[name] = (base, fixed)
  return REGISTRY.add(entry).fn
