"""The evaluation-time grid of a diffusion sampler, built once from the schedule and the options.

Time convention (schedules.py): continuous t in [0, 1], t = 1 is noise, t = 0 is
clean data, x_t = alpha(t) x0 + sigma(t) eps, lambda(t) = log(alpha/sigma).

A sampler with num_steps = N evaluates the model at N times t_0 = 1 > ... >
t_{N-1} = t_end and, with final_step_to_zero=True (the default), its last step goes
from t_{N-1} to clean data (alpha = 1, sigma = 0) with the first-order data step
x_final = x0_pred(x_{N-1}, t_{N-1}) (DDIM's / DDPM's step to alpha_bar = 1,
diffusers' final_sigmas_type="zero": no log(0), no repeated sigma). With
final_step_to_zero=False the N steps end at t_end and the result keeps noise of
scale sigma(t_end). Either way the grid is a `StepGrid` of N + 1 points.

The times come from a spacing of `schedules.timesteps` (spacing, rho, t_end) or
are given explicitly (`timesteps=`, e.g. the model-calibrated grid of
research.diffusion.steps), or a prebuilt StepGrid is passed (`grid=`).
Defaults are per sampler, a `GridRule` in its registry entry:

* spacing: "time_quadratic" for the exponential integrators (Lu et al. 2022:
  t_i = (1 - i/(N-1) (1 - sqrt(t_end)))^2), "time_uniform" for DDIM, "karras"
  (rho = 7, Karras et al. 2022) for the Karras samplers, "linspace" for DDPM on
  discrete schedules (num_steps = T is the training chain);
* t_end: "continued" = `default_t_end`, the grid continued to t = 0 so that the
  final denoising step is about one more step of it: max(t_min, (1.5 / N)^2)
  (time_uniform: max(t_min, 0.5 / N); karras: t_min); or "t_min" = the
  smallest trained time. The choice of constants is explained, with
  measurements, in docs/samplers.md.

`GRID_OPTIONS` are the registry Options of these arguments, shared by every
sampler that takes a grid.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from research import registry
from research.diffusion import schedules as schedules_lib

__all__ = [
    "StepGrid", "GridRule", "build", "for_spec",
    "sampling_grid", "check_timesteps", "check_num_steps", "default_t_end", "resolve_t_end",
    "is_concrete", "array_module", "to_device",
    "DEFAULT_SPACING", "SPACING", "T_END", "RHO", "TIMESTEPS", "FINAL_STEP_TO_ZERO", "GRID",
    "STEPS_OFFSET", "INDEX_RULE",
    "GRID_OPTIONS", "grid_options",
]

DEFAULT_SPACING = "time_quadratic"
END_SCALE = 1.5                 # t_end = (END_SCALE / N)^2
END_SCALE_TIME_UNIFORM = 0.5    # t_end = END_SCALE_TIME_UNIFORM / N (time_uniform)


def check_num_steps(num_steps) -> int:
  """num_steps as a Python int >= 1 (static), else ValueError naming it."""
  if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) \
      or num_steps < 1:
    raise ValueError(
        f"num_steps must be a Python int >= 1, got num_steps={num_steps!r}")
  return int(num_steps)


class StepGrid(NamedTuple):
  """Sampling times and schedule values at them, each of shape (num_steps + 1,).

  Points 0..N-1 are where the model is evaluated (t_0 = 1, ..., t_{N-1}). The
  last point is t_end (final_step_to_zero=False) or clean data (final_step_to_zero=True:
  t = 0, alpha = 1, sigma = 0, log_snr = +inf, set explicitly, not read from
  the schedule, so it is clean also for VE schedules with sigma(0) > 0).
  """
  t: jax.Array
  alpha: jax.Array
  sigma: jax.Array
  log_snr: jax.Array
  final_step_to_zero: bool


def default_t_end(schedule, num_steps, final_step_to_zero=True,
                  spacing=DEFAULT_SPACING) -> float:
  """The default last evaluation time t_{N-1} before the final step to clean data.

  The N-point grid continued to t = 0, so that the final step x = x0_pred(x, t_end)
  is about one more step of the same grid instead of a jump from t_min:
  time_uniform: max(t_min, 0.5 / N); time_quadratic and logsnr_uniform:
  max(t_min, (1.5 / N)^2) (the time-quadratic grid t_i = (1 - i/N)^2, with the
  constants END_SCALE chosen on analytic mixtures, docs/samplers.md). "karras"
  keeps EDM's convention (its smallest noise level at t_min, as the Karras
  samplers of karras.py), and so does every spacing without the final step.
  """
  if not final_step_to_zero or spacing == "karras":
    return float(schedule.t_min)
  if spacing == "time_uniform":
    return max(float(schedule.t_min), END_SCALE_TIME_UNIFORM / num_steps)
  return max(float(schedule.t_min), (END_SCALE / num_steps) ** 2)


def resolve_t_end(schedule, num_steps, t_end, spacing, final_step_to_zero):
  """t_end as given, or the default_t_end rule when t_end is None (continuous spacings)."""
  if t_end is not None or spacing in schedules_lib.DISCRETE_SPACINGS:
    return t_end
  return default_t_end(schedule, num_steps, final_step_to_zero, spacing)


def sampling_grid(schedule, num_steps, *, spacing=None, t_end=None,
                  final_step_to_zero=True, rho=7.0, timesteps=None, steps_offset=0,
                  index_rule="ddim") -> StepGrid:
  """The N + 1 points of an N-step sampler (see the module docstring).

  timesteps: explicit evaluation times instead of a spacing (e.g. a grid from
  research.diffusion.steps): a 1-D array of N strictly decreasing times in (0, 1]
  (N + 1 with final_step_to_zero=False), normally starting at t = 1; it
  replaces spacing, rho and the t_end rule (t_end must then be None).

  final_step_to_zero: N evaluation times from t = 1 to t_end (continuous spacings:
  schedules.timesteps(schedule, N - 1, spacing, t_end=t_end); diffusers'
  discrete spacings: their N index times), then clean data. Otherwise
  schedules.timesteps(schedule, N, spacing, t_end=t_end) (discrete spacings:
  the first N + 1 index times of an (N + 1)-point grid). t_end=None means
  schedule.t_min, as in schedules.timesteps; `build` applies a sampler's
  GridRule (e.g. the `default_t_end` rule) before calling this.

  steps_offset, index_rule: diffusers' per-scheduler index grids
  (`schedules.index_grid`: steps_offset shifts "leading"; index_rule "multistep" =
  DPMSolverMultistep / UniPC, "euler" = Euler / EulerAncestral). With
  spacing="karras" on a discrete schedule, index_rule="multistep" is diffusers'
  use_karras_sigmas=True: the N levels s_i (EDM's formula between s(1) and
  s(t_end)) are kept for the solver (alpha = 1/sqrt(1 + s^2), sigma = s alpha),
  while the model is called at the rounded DDPM index of each level, t_i =
  (round(n_i) + 1)/T, n_i interpolated linearly in log s on the table of s(n)
  (diffusers' _sigma_to_t): grid.t is then the model's time, not the time of
  grid.sigma.

  When the schedule is concrete (the usual case: closed over by the jitted
  sampler) the grid is evaluated at trace time and returned as float64 numpy
  arrays, so the solver coefficients derived from it are computed in float64
  and enter the compiled program as constants; a traced schedule gives jnp
  float32 arrays.
  """
  num_steps = check_num_steps(num_steps)
  final_step_to_zero = registry.check_bool("final_step_to_zero", final_step_to_zero)
  n_eval = num_steps if final_step_to_zero else num_steps + 1
  steps_offset, index_rule = _check_index_options(steps_offset, index_rule)
  if timesteps is not None:
    if steps_offset or index_rule != "ddim":
      raise ValueError(f"steps_offset and index_rule cannot be set together with timesteps,"
                       f" got steps_offset={steps_offset!r}, index_rule={index_rule!r}")
    if t_end is not None:
      raise ValueError(f"t_end cannot be set together with timesteps (the last"
                       f" time is timesteps[-1]), got t_end={t_end!r}")
    values = list(_explicit_times(schedule, timesteps, n_eval, final_step_to_zero))
    return _finish_grid(values, final_step_to_zero)
  spacing = DEFAULT_SPACING if spacing is None else spacing
  if spacing not in schedules_lib.SPACINGS:
    raise ValueError(f"unknown spacing={spacing!r}; valid spacings:"
                     f" {list(schedules_lib.SPACINGS)}")
  discrete = spacing in schedules_lib.DISCRETE_SPACINGS
  rounded_karras = spacing == "karras" and index_rule == "multistep"
  if not discrete and not rounded_karras and (steps_offset or index_rule != "ddim"):
    raise ValueError(f"steps_offset and index_rule apply to the discrete spacings"
                     f" {schedules_lib.DISCRETE_SPACINGS} (and index_rule='multistep' to"
                     f" 'karras'), got spacing={spacing!r}, steps_offset={steps_offset!r},"
                     f" index_rule={index_rule!r}")
  if rounded_karras and (steps_offset or not (schedule.is_discrete and is_concrete(
      *jax.tree_util.tree_leaves(schedule)))):
    raise ValueError(f"index_rule='multistep' with spacing='karras' (the model at rounded DDPM"
                     f" indices) needs a concrete discrete schedule and steps_offset=0, got kind"
                     f" {schedule.kind!r}, steps_offset={steps_offset!r}")
  if discrete and not schedule.is_discrete:
    raise ValueError(f"spacing {spacing!r} needs a discrete schedule (num_train_steps > 0), got"
                     f" schedule kind {schedule.kind!r}")
  if discrete:
    schedules_lib.index_grid(schedule.num_train_steps, n_eval, spacing,
                             steps_offset=steps_offset, index_rule=index_rule)
  if t_end is not None:
    t_end = float(t_end)
    if discrete:
      raise ValueError(
          f"t_end cannot be set with the discrete spacing {spacing!r} (its"
          f" times are the index grid), got t_end={t_end!r}")
    if not final_step_to_zero and schedule.is_vp and t_end <= 0.0:
      raise ValueError(
          f"t_end must be > 0 without a final step to clean data (lambda(0) ="
          f" inf); use final_step_to_zero=True to land on clean data, got"
          f" t_end={t_end!r}")
  if not discrete and n_eval > 1:
    # Validates spacing, rho and t_end eagerly (outside the compiled helper).
    schedules_lib.timesteps(schedule, 1, spacing, rho=rho, t_end=t_end)
  if rounded_karras:
    values = list(_rounded_karras(schedule, n_eval, float(rho), t_end))
  else:
    values = list(_eval_times(schedule, n_eval, spacing, float(rho), t_end, steps_offset,
                              index_rule))
  return _finish_grid(values, final_step_to_zero)


def _check_index_options(steps_offset, index_rule):
  if isinstance(steps_offset, bool) or not isinstance(steps_offset, (int, np.integer)) \
      or steps_offset < 0:
    raise ValueError(f"steps_offset must be an int >= 0, got steps_offset={steps_offset!r}")
  registry.check_choice("index_rule", index_rule, schedules_lib.INDEX_RULES)
  return int(steps_offset), index_rule


def _rounded_karras(schedule, n_eval, rho, t_end):
  """(t, alpha, sigma, log_snr): Karras levels for the solver, the model at rounded indices.

  diffusers' DPMSolverMultistepScheduler(use_karras_sigmas=True).set_timesteps:
  s_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho (float32), the
  index n_i = interp(log s_i, log s(k), k) rounded (k = 0..T-1), t_i = (n_i + 1)/T.
  """
  T = schedule.num_train_steps
  t_lo = schedule.t_min if t_end is None else float(t_end)
  table_t = (np.arange(T, dtype=np.float64) + 1.0) / T
  log_s_table = np.log(_schedule_map(schedule, "edm_sigma", table_t))
  s_hi, s_lo = (float(_schedule_map(schedule, "edm_sigma", np.array([t]))[0]) for t in (1.0, t_lo))
  ramp = np.linspace(0.0, 1.0, n_eval)
  s = (s_hi ** (1.0 / rho) + ramp * (s_lo ** (1.0 / rho) - s_hi ** (1.0 / rho))) ** rho
  s = s.astype(np.float32).astype(np.float64)
  index = np.round(np.interp(np.log(s), log_s_table, np.arange(T, dtype=np.float64)))
  t = np.asarray((index + 1.0) / T, np.float32).astype(np.float64)
  alpha = 1.0 / np.sqrt(1.0 + s ** 2)
  return t, alpha, s * alpha, -np.log(s)


def _finish_grid(values, final_step_to_zero):
  """StepGrid from (t, alpha, sigma, log_snr) at the evaluation times (+ clean data)."""
  if is_concrete(*values):
    xp = np
    values = [np.asarray(v, np.float64) for v in values]
  else:
    xp = jnp
    values = [jnp.asarray(v, jnp.float32) for v in values]
  if final_step_to_zero:
    clean = (0.0, 1.0, 0.0, np.inf)       # t, alpha, sigma, log_snr of x0
    values = [xp.concatenate([v, xp.full((1,), c, v.dtype)])
              for v, c in zip(values, clean)]
  return StepGrid(*values, final_step_to_zero)


def check_timesteps(timesteps, n_eval, final_step_to_zero=True):
  """Validates explicit evaluation times: 1-D, n_eval of them, strictly decreasing in (0, 1].

  Concrete times are returned as float64 numpy (rounded to float32, the times the
  model sees); traced ones as float32 jax arrays (only the shape is checked).
  """
  if is_concrete(timesteps):
    t = np.asarray(timesteps, np.float64)
    if t.ndim != 1 or t.shape[0] != n_eval:
      raise ValueError(
          f"timesteps must be a 1-D array of {n_eval} times (num_steps"
          f"{'' if final_step_to_zero else ' + 1'} with final_step_to_zero="
          f"{final_step_to_zero}), got shape {t.shape}")
    if not np.all(np.isfinite(t)) or np.any(t <= 0.0) or np.any(t > 1.0) \
        or np.any(np.diff(t) >= 0.0):
      raise ValueError(f"timesteps must be strictly decreasing times in (0, 1],"
                       f" got timesteps={t.tolist()!r}")
    return np.asarray(t, np.float32).astype(np.float64)
  t = jnp.asarray(timesteps, jnp.float32)
  if t.shape != (n_eval,):
    raise ValueError(f"timesteps must be a 1-D array of {n_eval} times, got"
                     f" shape {t.shape}")
  return t


def _explicit_times(schedule, timesteps, n_eval, final_step_to_zero):
  """(t, alpha, sigma, log_snr) at explicit evaluation times."""
  t = check_timesteps(timesteps, n_eval, final_step_to_zero)
  if isinstance(t, np.ndarray) and is_concrete(*jax.tree_util.tree_leaves(schedule)):
    return (t,) + _schedule_map(schedule, "alpha_sigma_log_snr", t)
  t = jnp.asarray(t, jnp.float32)
  return t, schedule.alpha(t), schedule.sigma(t), schedule.log_snr(t)


def _eval_times(schedule, n_eval, spacing, rho, t_end, steps_offset=0, index_rule="ddim"):
  """The n_eval evaluation times (schedules.timesteps' grid) and the schedule there.

  For a traced schedule this is schedules.timesteps + the schedule methods. For
  a concrete one (the usual case) the same grids are built in float64 numpy
  from trace-time scalars, and the elementwise schedule maps run in a compiled
  helper on arrays padded to a power of two, so a new num_steps costs no new
  compilation (the timesteps formulas are repeated here; a test checks that
  both agree).
  """
  leaves = jax.tree_util.tree_leaves(schedule)
  if not is_concrete(*leaves):
    if spacing in schedules_lib.DISCRETE_SPACINGS:
      t_eval = schedules_lib.timesteps(schedule, n_eval, spacing, steps_offset=steps_offset,
                                       index_rule=index_rule)[:-1]
    elif n_eval == 1:
      t_eval = jnp.ones((1,), jnp.float32)
    else:
      t_eval = schedules_lib.timesteps(schedule, n_eval - 1, spacing, rho=rho,
                                       t_end=t_end)
    return (t_eval, schedule.alpha(t_eval), schedule.sigma(t_eval),
            schedule.log_snr(t_eval))
  if spacing in schedules_lib.DISCRETE_SPACINGS:
    index = schedules_lib.index_grid(schedule.num_train_steps, n_eval, spacing,
                                     steps_offset=steps_offset, index_rule=index_rule)
    t_eval = (index + 1.0) / schedule.num_train_steps
  elif n_eval == 1:
    t_eval = np.ones((1,))
  else:
    n = n_eval - 1
    t_lo = schedule.t_min if t_end is None else float(t_end)
    frac = np.arange(n + 1) / n
    if spacing == "time_uniform":
      t_eval = 1.0 + frac * (t_lo - 1.0)
    elif spacing == "time_quadratic":
      t_eval = (1.0 + frac * (np.sqrt(t_lo) - 1.0)) ** 2
    elif spacing == "logsnr_uniform":
      lam_hi, lam_lo = (float(_schedule_map(schedule, "log_snr", np.array([t]))[0])
                        for t in (1.0, t_lo))
      t_eval = _schedule_map(schedule, "t_from_log_snr",
                             lam_hi + frac * (lam_lo - lam_hi))
    else:  # karras
      s_hi, s_lo = (float(_schedule_map(schedule, "edm_sigma", np.array([t]))[0])
                    ** (1.0 / rho) for t in (1.0, t_lo))
      t_eval = _schedule_map(schedule, "t_from_edm_sigma",
                             (s_hi + frac * (s_lo - s_hi)) ** rho)
    t_eval = np.asarray(t_eval, np.float64)
    t_eval[0], t_eval[-1] = 1.0, t_lo
  t_eval = np.asarray(t_eval, np.float32).astype(np.float64)
  values = _schedule_map(schedule, "alpha_sigma_log_snr", t_eval)
  return (t_eval,) + values


@functools.partial(jax.jit, static_argnums=(1,))
def _schedule_map_padded(schedule, method, values):
  if method == "alpha_sigma_log_snr":
    return schedule.alpha(values), schedule.sigma(values), schedule.log_snr(values)
  return getattr(schedule, method)(values)


def _schedule_map(schedule, method, values):
  """An elementwise schedule method on a concrete 1-D array (padded to 2^k >= 16)."""
  values = np.asarray(values, np.float64)
  n = values.shape[0]
  size = max(16, 1 << max(n - 1, 0).bit_length())
  padded = np.concatenate([values, np.full((size - n,), values[-1])])
  with jax.ensure_compile_time_eval():
    out = _schedule_map_padded(schedule, method, jnp.asarray(padded, jnp.float32))
  if isinstance(out, tuple):
    return tuple(np.asarray(o, np.float64)[:n] for o in out)
  return np.asarray(out, np.float64)[:n]


def is_concrete(*arrays) -> bool:
  """True when no argument is a tracer (values known at trace time)."""
  return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def array_module(*arrays):
  """numpy for concrete (trace-time) step arrays, jax.numpy for traced ones."""
  return np if all(isinstance(a, np.ndarray) for a in arrays) else jnp


def to_device(*arrays):
  """Per-step coefficient arrays as float32 jax arrays for the scan."""
  out = tuple(jnp.asarray(a, jnp.float32) for a in arrays)
  return out[0] if len(out) == 1 else out


# ----------------------------------------------------------------------------
# Per-sampler defaults and the one entry point `build`.
# ----------------------------------------------------------------------------
T_END_RULES = ("continued", "t_min")


@dataclasses.dataclass(frozen=True)
class GridRule:
  """A sampler's grid defaults (its registry entry's `grid`).

  spacing: the default spacing; a discrete one (DDPM's "linspace") falls back to
  "time_uniform" on a continuous schedule. t_end: "continued" (`default_t_end`)
  or "t_min" (the default end time when t_end is not given). final: None means
  the grid follows the final_step_to_zero option; True / False fix it (then
  final_step_to_zero, if the sampler has it, is the sampler's own: pc and
  langevin always step on a grid ending at t_end, resp. on N noise levels, and
  the option says whether a denoising step follows).
  """
  spacing: str
  t_end: str = "continued"
  final: bool | None = None

  def __post_init__(self):
    registry.check_choice("spacing", self.spacing, schedules_lib.SPACINGS)
    registry.check_choice("t_end", self.t_end, T_END_RULES)

  def default_spacing(self, schedule) -> str:
    if self.spacing in schedules_lib.DISCRETE_SPACINGS and not schedule.is_discrete:
      return "time_uniform"
    return self.spacing

  @property
  def option_names(self) -> tuple:
    """The options `build` consumes (the others go to the sampler)."""
    names = ("spacing", "t_end", "rho", "timesteps", "grid", "steps_offset", "index_rule")
    return names + (("final_step_to_zero",) if self.final is None else ())


def build(schedule, num_steps, rule: GridRule, *, spacing=None, t_end=None, rho=7.0,
          timesteps=None, final_step_to_zero=True, grid=None, steps_offset=0,
          index_rule="ddim") -> StepGrid:
  """The StepGrid of a sampler with GridRule `rule` (module docstring).

  grid: a prebuilt StepGrid (of num_steps + 1 points, ending as the rule says) is
  returned as is; spacing, t_end and timesteps must then be None.
  """
  num_steps = check_num_steps(num_steps)
  final = final_step_to_zero if rule.final is None else rule.final
  if grid is not None:
    given = [k for k, v in (("spacing", spacing), ("t_end", t_end), ("timesteps", timesteps))
             if v is not None] + (["steps_offset"] if steps_offset else []) + (
                 ["index_rule"] if index_rule != "ddim" else [])
    if given:
      raise ValueError(f"grid cannot be combined with {given} (it already fixes the times)")
    return _check_grid(grid, num_steps, registry.check_bool("final_step_to_zero", final))
  spacing = rule.default_spacing(schedule) if spacing is None else spacing
  if timesteps is None and rule.t_end == "continued":
    t_end = resolve_t_end(schedule, num_steps, t_end, spacing, final)
  return sampling_grid(schedule, num_steps, spacing=spacing, t_end=t_end, rho=rho,
                       final_step_to_zero=final, timesteps=timesteps,
                       steps_offset=steps_offset, index_rule=index_rule)


def _check_grid(grid, num_steps, final):
  if not isinstance(grid, StepGrid):
    raise ValueError(f"grid must be a StepGrid (grid.build / grid.sampling_grid), got {grid!r}")
  if tuple(np.shape(grid.t)) != (num_steps + 1,):
    raise ValueError(f"grid must have num_steps + 1 = {num_steps + 1} points, got"
                     f" {np.shape(grid.t)[0] if np.ndim(grid.t) else grid.t!r}")
  if bool(grid.final_step_to_zero) != final:
    raise ValueError(f"grid must have final_step_to_zero={final} for this sampler, got"
                     f" {grid.final_step_to_zero}")
  return grid


def for_spec(spec, schedule, num_steps, **options) -> StepGrid:
  """The grid that the registered sampler `spec` builds for these options."""
  rule = spec.grid
  if rule is None:
    raise ValueError(f"sampler {spec.name!r} does not take a step grid")
  options = spec.check_options(options)
  names = [k for k in rule.option_names if k in spec.options]
  return build(schedule, num_steps, rule, **{k: options.get(k, spec.options[k].default)
                                             for k in names})


def _check_spacing(value):
  if value is not None and value not in schedules_lib.SPACINGS:
    raise ValueError(f"unknown spacing={value!r}; valid spacings: {list(schedules_lib.SPACINGS)}")
  return value


def _check_grid_type(value):
  if value is not None and not isinstance(value, StepGrid):
    raise ValueError(f"grid must be a StepGrid or None, got grid={value!r}")
  return value


SPACING = registry.Option("spacing", None, registry.optional(str), _check_spacing,
                          f"step spacing, one of {schedules_lib.SPACINGS} (None: the sampler's)")
T_END = registry.real("t_end", None, low=0.0, high=1.0,
                      doc="last evaluation time (None: the sampler's rule)")
RHO = registry.real("rho", 7.0, low=0.0, low_open=True, doc="exponent of the karras spacing")
TIMESTEPS = registry.Option("timesteps", None, registry.optional(registry.parse_floats), None,
                            "explicit evaluation times, strictly decreasing in (0, 1]")
FINAL_STEP_TO_ZERO = registry.flag("final_step_to_zero", True,
                                   "end with the first-order step to clean data")
GRID = registry.Option("grid", None, registry.refuse_text, _check_grid_type,
                       "a prebuilt StepGrid (replaces spacing, t_end, rho, timesteps)")
STEPS_OFFSET = registry.integer("steps_offset", 0, minimum=0,
                                doc="diffusers' steps_offset, added to the 'leading' index grid")
INDEX_RULE = registry.choice("index_rule", "ddim", schedules_lib.INDEX_RULES,
                             "diffusers' index-grid rule of the discrete spacings: 'ddim' (DDIM,"
                             " DDPM), 'multistep' (DPMSolverMultistep, UniPC; with 'karras': the"
                             " model at rounded indices), 'euler' (Euler, EulerAncestral)")
GRID_OPTIONS = (SPACING, T_END, RHO, TIMESTEPS, FINAL_STEP_TO_ZERO, GRID, STEPS_OFFSET,
                INDEX_RULE)


def grid_options(exclude=()) -> tuple:
  """GRID_OPTIONS without the names in `exclude` (a sampler that lacks some of them)."""
  return tuple(o for o in GRID_OPTIONS if o.name not in exclude)
