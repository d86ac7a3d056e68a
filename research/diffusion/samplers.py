"""Diffusion samplers: the registry, the helpers they share, DDPM and DDIM.

Time convention (schedules.py): continuous t in [0, 1], t = 1 is noise, t = 0 is
clean data, x_t = alpha(t) x0 + sigma(t) eps, log-SNR lambda(t) = log(alpha/sigma)
decreasing in t. Discrete DDPM schedules are wrapped as continuous time
(t_n = (n + 1)/T, the network sees T t - 1).

Sampler contract (every registry entry):

    sampler(key, model_fn, x_T, schedule, *, num_steps, prediction="eps", **options) -> x0

* model_fn(x, t) -> prediction of x's shape, t the continuous time of shape
  (batch,) (samplers always pass one time per example). prediction is one of
  parameterization.PREDICTIONS ("eps", "x0", "v", "score").
* The whole loop is one `lax.scan` over precomputed per-step coefficient arrays,
  so compile time does not grow with num_steps (a static Python int).
* Noise for example i at step n is normal(fold_in(fold_in(key, n), i)) (see
  `per_example_normal`): results do not depend on the batch size. Deterministic
  samplers ignore key.
* float32 throughout.

Steps, the end time and the final step (shared options of the ODE samplers
`spacing`, `t_end`, `final_step_to_zero`, `rho`): a sampler with num_steps = N
evaluates the model at N times t_0 = 1 > ... > t_{N-1} = t_end and, with
`final_step_to_zero=True` (the default), its last step goes from t_{N-1} to clean
data (alpha = 1, sigma = 0) with the first-order data-prediction step

    x_final = x0_pred(x_{N-1}, t_{N-1}),

which is DDIM's / DDPM's step to alpha_bar = 1 and diffusers'
final_sigmas_type="zero" (a first-order step to sigma = 0 is exactly
x = x0_pred: no log(0), no repeated sigma). With final_step_to_zero=False the N
steps end at t_end (default t_min) and the result keeps noise of scale
sigma(t_end). A one-evaluation-per-step sampler costs exactly num_steps network
evaluations either way; `nfe(name, num_steps, **options)` is exact for every
sampler.

Defaults, measured against the exact PF-ODE map of analytic 2-D mixtures (ring8,
grid25, random mixtures; linear discrete schedule, T = 1000; README table):
* spacing "time_quadratic" (t_i = (1 - i/(N-1) (1 - sqrt(t_end)))^2, Lu et al.
  2022): at NFE 5-20 it beat "logsnr_uniform", "time_uniform" and "karras"
  (geometric mean over the mixtures) for every solver but DDIM (first order),
  whose default is "time_uniform" (DDIM_SPACING);
* t_end = max(t_min, (1.5 / N)^2) (time_uniform: max(t_min, 0.5 / N); karras:
  t_min; `default_t_end`): the grid continued to t = 0, so the final denoising step is
  about one more step of the same grid. Ending at t_min (sigma = 0.01) instead
  spends steps at low noise where the solvers are already accurate (at NFE 10
  the error is 1.05-3.4x larger); for N >= 48 the rule gives t_min. Pass
  t_end=schedule.t_min to keep every step down to the smallest trained time.

Explicit grids: every sampler of this module, dpm_solvers.py and karras.py also
takes `timesteps=` (the N evaluation times t_0 = 1 > ... > t_{N-1} > 0,
`sampling_grid`), which replaces spacing, rho and the t_end rule. The fixed
defaults above were tuned on data of scale ~1; when the data scale differs (e.g.
mixture means ~ N(0, 9 I), whose trajectories separate at lower SNR) the
model-calibrated grid of research.diffusion.steps, passed as `timesteps=`, is
much more accurate per NFE (README sampler benchmark).

Registry: NAMES, get(name), nfe(name, num_steps, **options), register(...).
"""
from __future__ import annotations

import functools
import importlib
import inspect
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from research.diffusion import parameterization
from research.diffusion import schedules as schedules_lib

__all__ = [
    "NAMES",
    "get",
    "nfe",
    "register",
    "SamplerEntry",
    "DEFAULT_SPACING",
    "StepGrid",
    "check_num_steps",
    "check_prediction",
    "check_eta",
    "check_bool",
    "per_example_normal",
    "batch_time",
    "predict_x0_eps",
    "predict",
    "sampling_grid",
    "check_timesteps",
    "default_t_end",
    "resolve_t_end",
    "is_concrete",
    "array_module",
    "to_device",
    "denoise_final_step",
    "ddpm",
    "ddpm_nfe",
    "ddim",
    "ddim_nfe",
]

# Default spacing and end time of the ODE samplers (see the module docstring).
DEFAULT_SPACING = "time_quadratic"
END_SCALE = 1.5                 # t_end = (END_SCALE / N)^2
END_SCALE_TIME_UNIFORM = 0.5    # t_end = END_SCALE_TIME_UNIFORM / N (time_uniform)
DDIM_SPACING = "time_uniform"   # DDIM's measured best (first order)


# ----------------------------------------------------------------------------
# Argument checks.
# ----------------------------------------------------------------------------
def check_num_steps(num_steps) -> int:
  """num_steps as a Python int >= 1 (static), else ValueError naming it."""
  if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) \
      or num_steps < 1:
    raise ValueError(
        f"num_steps must be a Python int >= 1, got num_steps={num_steps!r}")
  return int(num_steps)


def check_prediction(prediction) -> str:
  """prediction must be one of parameterization.PREDICTIONS."""
  if prediction not in parameterization.PREDICTIONS:
    raise ValueError(
        f"unknown prediction={prediction!r}; valid predictions:"
        f" {list(parameterization.PREDICTIONS)}")
  return prediction


def check_eta(eta, *, upper=1.0):
  """eta (noise scale of DDIM-type samplers) must lie in [0, upper] when concrete."""
  if isinstance(eta, jax.core.Tracer):
    return eta
  value = float(eta)
  if not 0.0 <= value <= upper:
    raise ValueError(f"eta must lie in [0, {upper}], got eta={eta!r}")
  return value


def check_bool(name, value):
  """value must be a Python bool (a static option), else ValueError naming it."""
  if not isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{name} must be a bool, got {name}={value!r}")
  return bool(value)


# ----------------------------------------------------------------------------
# Shared helpers.
# ----------------------------------------------------------------------------
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


def batch_time(t, x):
  """The scalar time t as a (batch,) float32 array for model_fn(x, t)."""
  return jnp.full((x.shape[0],), t, dtype=jnp.float32)


def predict_x0_eps(model_fn, x, t, alpha, sigma, prediction):
  """One network call at (x, t) converted to (x0_pred, eps_pred).

  x0 = (x - sigma eps) / alpha etc. (parameterization.to_x0 / to_eps); alpha and
  sigma are the schedule values at t (scalars).
  """
  pred = model_fn(x, batch_time(t, x))
  x0 = parameterization.to_x0(pred, x, alpha, sigma, prediction)
  eps = parameterization.to_eps(pred, x, alpha, sigma, prediction)
  return x0, eps


def predict(model_fn, x, t, alpha, sigma, prediction, target):
  """One network call at (x, t) converted to `target` ("x0" or "eps")."""
  pred = model_fn(x, batch_time(t, x))
  if target == "x0":
    return parameterization.to_x0(pred, x, alpha, sigma, prediction)
  if target == "eps":
    return parameterization.to_eps(pred, x, alpha, sigma, prediction)
  raise ValueError(f"target must be 'x0' or 'eps', got target={target!r}")


def denoise_final_step(x, model_out, alpha, sigma, target):
  """The final first-order step to clean data: x_final = x0_pred(x, t_end).

  From an x0 prediction that is the prediction itself; from an eps prediction
  x0 = (x - sigma eps) / alpha. (Both are the DPM-Solver(++) first-order step
  with sigma_next = 0, alpha_next = 1.)
  """
  if target == "x0":
    return model_out
  return (x - sigma * model_out) / alpha


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


def default_spacing(schedule) -> str:
  del schedule
  return DEFAULT_SPACING


def default_t_end(schedule, num_steps, final_step_to_zero=True,
                  spacing=DEFAULT_SPACING) -> float:
  """The default last evaluation time t_{N-1} before the final step to clean data.

  The N-point grid continued to t = 0, so that the final step x = x0_pred(x, t_end)
  is about one more step of the same grid instead of a jump from t_min:
  time_uniform: max(t_min, 0.5 / N); time_quadratic and logsnr_uniform:
  max(t_min, (1.5 / N)^2) (the time-quadratic grid t_i = (1 - i/N)^2, with the
  constants END_SCALE measured on analytic mixtures). "karras" keeps EDM's
  convention (its smallest noise level at t_min, as the Karras samplers of
  karras.py), and so does every spacing without the final step.
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
                  final_step_to_zero=True, rho=7.0, timesteps=None) -> StepGrid:
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
  schedule.t_min, as in schedules.timesteps; the samplers of this module and of
  dpm_solvers.py pass `resolve_t_end(...)` (the `default_t_end` rule) instead.

  When the schedule is concrete (the usual case: closed over by the jitted
  sampler) the grid is evaluated at trace time and returned as float64 numpy
  arrays, so the solver coefficients derived from it are computed in float64
  and enter the compiled program as constants; a traced schedule gives jnp
  float32 arrays.
  """
  num_steps = check_num_steps(num_steps)
  final_step_to_zero = check_bool("final_step_to_zero", final_step_to_zero)
  n_eval = num_steps if final_step_to_zero else num_steps + 1
  if timesteps is not None:
    if t_end is not None:
      raise ValueError(f"t_end cannot be set together with timesteps (the last"
                       f" time is timesteps[-1]), got t_end={t_end!r}")
    values = list(_explicit_times(schedule, timesteps, n_eval, final_step_to_zero))
    return _finish_grid(values, final_step_to_zero)
  spacing = default_spacing(schedule) if spacing is None else spacing
  if spacing not in schedules_lib.SPACINGS:
    raise ValueError(f"unknown spacing={spacing!r}; valid spacings:"
                     f" {list(schedules_lib.SPACINGS)}")
  discrete = spacing in schedules_lib.DISCRETE_SPACINGS
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
  values = list(_eval_times(schedule, n_eval, spacing, float(rho), t_end))
  return _finish_grid(values, final_step_to_zero)


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


def _eval_times(schedule, n_eval, spacing, rho, t_end):
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
      t_eval = schedules_lib.timesteps(schedule, n_eval, spacing)[:-1]
    elif n_eval == 1:
      t_eval = jnp.ones((1,), jnp.float32)
    else:
      t_eval = schedules_lib.timesteps(schedule, n_eval - 1, spacing, rho=rho,
                                       t_end=t_end)
    return (t_eval, schedule.alpha(t_eval), schedule.sigma(t_eval),
            schedule.log_snr(t_eval))
  if spacing in schedules_lib.DISCRETE_SPACINGS:
    index = schedules_lib.index_grid(schedule.num_train_steps, n_eval, spacing)
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
# DDPM (ancestral sampling).
# ----------------------------------------------------------------------------
def ddpm(key, model_fn, x_T, schedule, *, num_steps, prediction="eps",
         spacing=None, t_end=None, rho=7.0, timesteps=None):
  """Ancestral DDPM sampling with the posterior variance (Ho et al. 2020, eq. 6-7).

  On the (respaced) chain t_0 = 1 > ... > t_{N-1} > t_N = clean data, each step
  draws x_s ~ q(x_s | x_t, x0 = x0_pred) with, for s < t,

      c = 1 - SNR(t)/SNR(s) = -expm1(2 (lambda_t - lambda_s)),
      mean = (1 - c) alpha_s / alpha_t x_t + c alpha_s x0_pred,   var = c sigma_s^2,

  which for VP is MATH.md's sqrt(ab_s) beta_t/(1 - ab_t) x0 + sqrt(1 - beta_t)
  (1 - ab_s)/(1 - ab_t) x_t, variance (1 - ab_s)/(1 - ab_t) beta_t, with the
  respaced beta_t = 1 - ab_t/ab_s (Nichol & Dhariwal 2021, improved DDPM
  respacing). The final step (to alpha = 1, sigma = 0) returns the posterior
  mean x0_pred with no noise. Default spacing: "linspace" for discrete
  schedules (num_steps = T is the full training chain 999, ..., 0), else
  "time_uniform"; `timesteps` gives the N evaluation times explicitly
  (`sampling_grid`). NFE = num_steps.
  """
  num_steps = check_num_steps(num_steps)
  prediction = check_prediction(prediction)
  if spacing is None:
    spacing = "linspace" if schedule.is_discrete else "time_uniform"
  if t_end is None and spacing not in schedules_lib.DISCRETE_SPACINGS \
      and timesteps is None:
    t_end = schedule.t_min            # the whole chain, down to t_min
  grid = sampling_grid(schedule, num_steps, spacing=spacing, t_end=t_end,
                       rho=rho, final_step_to_zero=True, timesteps=timesteps)
  a, s, lam = grid.alpha, grid.sigma, grid.log_snr
  xp = array_module(a)
  ratio = xp.exp(2.0 * (lam[:-1] - lam[1:]))          # SNR(t)/SNR(s), 0 at the end
  c = -xp.expm1(2.0 * (lam[:-1] - lam[1:]))
  coef_x = ratio * a[1:] / a[:-1]
  coef_x0 = c * a[1:]
  noise_std = xp.sqrt(c) * s[1:]
  step_arrays = (jnp.arange(num_steps),) + to_device(
      grid.t[:-1], a[:-1], s[:-1], coef_x, coef_x0, noise_std)

  def step(x, inputs):
    n, t, alpha, sigma, cx, cx0, std = inputs
    x0, _ = predict_x0_eps(model_fn, x, t, alpha, sigma, prediction)
    z = per_example_normal(key, n, x)
    x = cx * x + cx0 * x0 + std * z
    return x, None

  x_T = jnp.asarray(x_T, jnp.float32)
  x, _ = jax.lax.scan(step, x_T, step_arrays)
  return x


def ddpm_nfe(num_steps, **options):
  """DDPM uses one network evaluation per step."""
  del options
  return check_num_steps(num_steps)


# ----------------------------------------------------------------------------
# DDIM.
# ----------------------------------------------------------------------------
def ddim(key, model_fn, x_T, schedule, *, num_steps, prediction="eps", eta=0.0,
         spacing=None, t_end=None, final_step_to_zero=True, rho=7.0,
         timesteps=None):
  """DDIM (Song, Meng & Ermon 2021, eq. 12 and 16), deterministic for eta = 0.

  From t to the next time s on the grid (prev from the actual time list):

      s_eta = eta sqrt((1 - ab_s)/(1 - ab_t)) sqrt(1 - ab_t/ab_s) = eta sigma_s sqrt(c),
      c = -expm1(2 (lambda_t - lambda_s)),
      x_s = alpha_s x0_pred + sqrt(sigma_s^2 - s_eta^2) eps_pred + s_eta z,

  with real noise z for eta > 0 (eta = 1 is DDPM's ancestral step with the
  posterior variance). eta = 0 is the exponential integrator DPM-Solver-1 (Lu
  et al. 2022), so it matches dpm_solver(order=1). The last step to clean data
  gives x0_pred (final_step_to_zero). `timesteps`: explicit evaluation times
  (`sampling_grid`). NFE = num_steps.
  """
  num_steps = check_num_steps(num_steps)
  prediction = check_prediction(prediction)
  eta = check_eta(eta)
  spacing = DDIM_SPACING if spacing is None else spacing
  if timesteps is None:
    t_end = resolve_t_end(schedule, num_steps, t_end, spacing, final_step_to_zero)
  grid = sampling_grid(schedule, num_steps, spacing=spacing, t_end=t_end,
                       rho=rho, final_step_to_zero=final_step_to_zero,
                       timesteps=timesteps)
  a, s, lam = grid.alpha, grid.sigma, grid.log_snr
  stochastic = isinstance(eta, jax.core.Tracer) or eta > 0.0
  xp = array_module(a) if not isinstance(eta, jax.core.Tracer) else jnp
  c = -xp.expm1(2.0 * (lam[:-1] - lam[1:]))
  noise_std = eta * s[1:] * xp.sqrt(c)
  coef_eps = s[1:] * xp.sqrt(xp.maximum(1.0 - (eta**2) * c, 0.0))
  coef_x0 = a[1:]
  step_arrays = (jnp.arange(num_steps),) + to_device(
      grid.t[:-1], a[:-1], s[:-1], coef_x0, coef_eps, noise_std)

  def step(x, inputs):
    n, t, alpha, sigma, cx0, ceps, std = inputs
    x0, eps = predict_x0_eps(model_fn, x, t, alpha, sigma, prediction)
    x = cx0 * x0 + ceps * eps
    if stochastic:
      x = x + std * per_example_normal(key, n, x)
    return x, None

  x_T = jnp.asarray(x_T, jnp.float32)
  x, _ = jax.lax.scan(step, x_T, step_arrays)
  return x


def ddim_nfe(num_steps, *, eta=0.0, **options):
  """DDIM uses one network evaluation per step."""
  del options
  check_eta(eta)
  return check_num_steps(num_steps)


# ----------------------------------------------------------------------------
# Registry.
# ----------------------------------------------------------------------------
class SamplerEntry(NamedTuple):
  """A registry entry: `sampler` and `nfe` are function names in `module`.

  nfe_fn(num_steps, **options) -> int returns the exact number of network
  evaluations. Entries are resolved lazily (importlib), so sampler modules may
  import this one for its helpers without an import cycle.
  """
  module: str
  sampler: str
  nfe: str


_REGISTRY: dict = {
    "ddpm": SamplerEntry("research.diffusion.samplers", "ddpm", "ddpm_nfe"),
    "ddim": SamplerEntry("research.diffusion.samplers", "ddim", "ddim_nfe"),
    "dpm_solver": SamplerEntry("research.diffusion.dpm_solvers", "dpm_solver",
                               "dpm_solver_nfe"),
    "dpm_solver++": SamplerEntry("research.diffusion.dpm_solvers",
                                 "dpm_solver_pp", "dpm_solver_pp_nfe"),
    "unipc": SamplerEntry("research.diffusion.dpm_solvers", "unipc",
                          "unipc_nfe"),
    # Multistep consistency sampling (Song et al. 2023, Algorithm 1): model_fn is a
    # consistency function f(x, t) -> x0 (prediction="x0"); num_steps = NFE.
    "consistency": SamplerEntry("research.diffusion.consistency", "sample",
                                "sample_nfe"),
    # ======================================================================
    # Karras-style and stochastic samplers (helper B2): append entries here,
    # e.g. "euler": SamplerEntry("research.diffusion.<module>", "euler", "euler_nfe").
    # ======================================================================
    "euler": SamplerEntry("research.diffusion.karras", "euler", "euler_nfe"),
    "heun": SamplerEntry("research.diffusion.karras", "heun", "heun_nfe"),
    "euler_ancestral": SamplerEntry("research.diffusion.karras", "euler_ancestral",
                                    "euler_ancestral_nfe"),
    "langevin": SamplerEntry("research.diffusion.stochastic", "langevin", "langevin_nfe"),
    "pc": SamplerEntry("research.diffusion.stochastic", "pc", "pc_nfe"),
}


def register(name: str, sampler: Callable, nfe_fn: Callable) -> None:
  """Adds (or replaces) a sampler at run time: `sampler` follows the contract
  above, nfe_fn(num_steps, **options) -> int."""
  if not isinstance(name, str) or not name:
    raise ValueError(f"name must be a non-empty string, got name={name!r}")
  if not callable(sampler) or not callable(nfe_fn):
    raise ValueError("sampler and nfe_fn must be callable")
  _REGISTRY[name] = (sampler, nfe_fn)


def __getattr__(attr):
  # NAMES follows run-time registrations.
  if attr == "NAMES":
    return tuple(_REGISTRY)
  raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def _resolve(name):
  if name not in _REGISTRY:
    raise ValueError(f"unknown sampler name={name!r}; valid names:"
                     f" {list(_REGISTRY)}")
  entry = _REGISTRY[name]
  if isinstance(entry, SamplerEntry):
    module = importlib.import_module(entry.module)
    return getattr(module, entry.sampler), getattr(module, entry.nfe)
  return entry


def get(name: str) -> Callable:
  """The sampler registered under `name`; ValueError listing the valid names."""
  return _resolve(name)[0]


def _check_options(name, sampler, options):
  params = inspect.signature(sampler).parameters
  if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
    return
  valid = [p.name for p in params.values()
           if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "num_steps"]
  for option in options:
    if option not in valid:
      raise ValueError(f"unknown option {option!r} for sampler {name!r};"
                       f" valid options: {valid}")


def nfe(name: str, num_steps: int, **options) -> int:
  """The exact number of network evaluations of sampler `name` with these options."""
  sampler, nfe_fn = _resolve(name)
  check_num_steps(num_steps)
  _check_options(name, sampler, options)
  if "prediction" in options:
    check_prediction(options["prediction"])
  options = {k: v for k, v in options.items() if k != "prediction"}
  return int(nfe_fn(num_steps, **options))
