"""Model-calibrated sampling steps: the N evaluation times that make a solver track the model's own ODE.

Time convention (schedules.py): continuous t in [0, 1], t = 1 is noise, t = 0 is
clean data, x_t = alpha(t) x0 + sigma(t) eps, log-SNR lambda(t) = log(alpha/sigma).

A deterministic sampler S with N network evaluations at times t_0 = 1 > t_1 >
... > t_{N-1} (then the final step to clean data, `grid.sampling_grid`)
approximates the probability-flow ODE map x_T -> x_0 of the model. Fixed rules
(time-uniform, time-quadratic, log-SNR-uniform, Karras) put the steps where they
help for data of scale ~1; when the trajectories of the data separate elsewhere
(e.g. well-separated modes of scale 3 decide at a lower SNR) a fixed rule wastes
steps. Here the steps are fitted to the model itself (Watson et al. 2021,
"Learning to efficiently sample"; LD3, Tong et al. 2024, "Learning to
discretize denoising diffusion ODEs"; Optimal Stepsize / OSS, Pei et al. 2025;
Align Your Steps, Sabour et al. 2024, who fit the steps with a different
objective): with calibration noises x_T^i ~ N(0, c^2 I), i = 1..M, drawn from
`key`,

    minimise_theta  L(theta) = 1/M sum_i || S(x_T^i; t(theta)) - S_ref(x_T^i) ||^2,

where S_ref is a high-NFE solve of the same model (UniPC-3, `reference_steps`
time-uniform steps), the model being the only oracle. Parametrisation, in
log-SNR, so that every theta is a valid grid (strictly decreasing times):

    lambda_end = lambda(1) + f_end (lambda(t_min) - lambda(1)),
        f_end = MIN_FRACTION + (1 - MIN_FRACTION) sigmoid(theta_0),
    lambda_i = lambda(1) + (lambda_end - lambda(1)) sum_{j<i} w_j,   i = 0..N-1,
        w = MIN_FRACTION / (N - 1) + (1 - MIN_FRACTION) softmax(theta_1..theta_{N-1}),
    t_i = schedule.t_from_log_snr(lambda_i),  t_0 = 1.

L is differentiated through the sampler (its per-step coefficients are computed
from the traced grid in jax.numpy) and minimised with Adam, one run from each of
a few fixed spacings, on stratified minibatches that always contain the samples
the best fixed spacing gets most wrong (L is dominated by the rare trajectories
that end in the wrong mode; `calibrate_timesteps`). Each run is one compiled
program (a lax.scan over iterations).

Cost (reported by `calibrate_timesteps` as `calibration_nfe`, network
evaluations per calibration sample): reference_steps for the reference, one
N-step solve per initial spacing and, per initial spacing, num_iters forward +
backward passes of the N-step sampler on minibatches of num_focus + batch_size
of the M samples (counted as 3 N evaluations each, the backward pass costing
about two forward passes: ceil(3 N num_iters (num_focus + batch_size) / M) per
sample) and two final N-step solves (the last and the averaged iterate).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.diffusion import grid as grid_lib
from research.diffusion import samplers as samplers_lib
from research.diffusion import schedules as schedules_lib

__all__ = [
    "MIN_FRACTION",
    "CalibratedSteps",
    "timesteps_from_params",
    "params_from_timesteps",
    "calibration_loss",
    "calibrate_timesteps",
]

# Smallest share of the log-SNR range per step, and smallest lambda_end fraction:
# keeps every step of positive length in float32.
MIN_FRACTION = 1e-3
_REFERENCE = ("unipc", {"order": 3, "spacing": "time_uniform"})
_GRID_OPTIONS = tuple(o.name for o in grid_lib.GRID_OPTIONS)


class CalibratedSteps(NamedTuple):
  """The result of `calibrate_timesteps`.

  timesteps: (N,) float32 evaluation times for the sampler's `timesteps=` option.
  loss: calibration mean squared distance to the reference at `timesteps`.
  initial_loss: the same at the best fixed spacing `init`.
  init: name of the fixed spacing with the lowest calibration loss (the baseline).
  calibration_nfe: network evaluations spent per calibration sample (module docstring).
  num_samples: number of calibration samples M.
  """
  timesteps: jax.Array
  loss: float
  initial_loss: float
  init: str
  calibration_nfe: int
  num_samples: int


def _log_snr_range(schedule):
  lam_hi = schedule.log_snr(jnp.float32(schedule.t_max))
  lam_lo = schedule.log_snr(jnp.float32(schedule.t_min))
  return lam_hi, lam_lo


def _check_schedule_range(schedule):
  lam_hi, lam_lo = _log_snr_range(schedule)
  if grid_lib.is_concrete(lam_hi, lam_lo) and not (
      np.isfinite(float(lam_hi)) and np.isfinite(float(lam_lo))
      and float(lam_lo) > float(lam_hi)):
    raise ValueError(
        f"schedule must have a finite log-SNR range lambda(1) < lambda(t_min),"
        f" got lambda(1)={float(lam_hi)!r}, lambda(t_min)={float(lam_lo)!r}"
        f" (t_min={schedule.t_min!r})")


def timesteps_from_params(schedule, params):
  """The N evaluation times t(theta) of the log-SNR parametrisation (module docstring).

  params: theta of shape (N,) (N = num_steps >= 1; theta_0 sets lambda_end,
  theta_1.. the step shares). Returns float32 times of shape (N,), t_0 = 1,
  strictly decreasing, t_{N-1} >= t_min. Jittable and differentiable in theta.
  """
  theta = jnp.asarray(params, jnp.float32)
  if theta.ndim != 1 or theta.shape[0] < 1:
    raise ValueError(f"params must be a 1-D array with num_steps >= 1 entries,"
                     f" got shape {theta.shape}")
  n = theta.shape[0]
  if n == 1:
    return jnp.ones((1,), jnp.float32)
  lam_hi, lam_lo = _log_snr_range(schedule)
  f_end = MIN_FRACTION + (1.0 - MIN_FRACTION) * jax.nn.sigmoid(theta[0])
  lam_end = lam_hi + f_end * (lam_lo - lam_hi)
  w = MIN_FRACTION / (n - 1) + (1.0 - MIN_FRACTION) * jax.nn.softmax(theta[1:])
  frac = jnp.concatenate([jnp.zeros((1,), jnp.float32), jnp.cumsum(w)])
  lam = lam_hi + (lam_end - lam_hi) * frac
  t = schedule.t_from_log_snr(lam).astype(jnp.float32)
  return t.at[0].set(1.0)


def params_from_timesteps(schedule, timesteps):
  """theta with timesteps_from_params(schedule, theta) ~= timesteps (the inverse map).

  timesteps: N strictly decreasing times in (0, 1] with t_0 = 1 and
  t_{N-1} >= t_min (e.g. a fixed spacing's grid). Shares below MIN_FRACTION are
  clipped. Returns float32 theta of shape (N,).
  """
  t = grid_lib.check_timesteps(timesteps, np.shape(timesteps)[0])
  t = np.asarray(t, np.float64)
  if t[0] != 1.0 or t[-1] < schedule.t_min - 1e-7:
    raise ValueError(f"timesteps must start at t = 1 and end at or above t_min ="
                     f" {schedule.t_min}, got timesteps={t.tolist()!r}")
  n = t.shape[0]
  if n == 1:
    return jnp.zeros((1,), jnp.float32)
  lam_hi, lam_lo = (float(v) for v in _log_snr_range(schedule))
  lam = np.asarray(schedule.log_snr(jnp.asarray(t, jnp.float32)), np.float64)
  lam[0] = lam_hi
  f_end = np.clip((min(lam[-1], lam_lo) - lam_hi) / (lam_lo - lam_hi), 0.0, 1.0)
  g = np.clip((f_end - MIN_FRACTION) / (1.0 - MIN_FRACTION), 1e-6, 1.0 - 1e-6)
  share = np.diff(lam) / (lam[-1] - lam_hi)
  share = np.clip((share - MIN_FRACTION / (n - 1)) / (1.0 - MIN_FRACTION), 1e-8, None)
  theta = np.concatenate([[np.log(g / (1.0 - g))], np.log(share)])
  return jnp.asarray(theta, jnp.float32)


def _resolve_sampler(sampler, sampler_options):
  options = dict(sampler_options or {})
  for name in _GRID_OPTIONS:
    if name in options:
      raise ValueError(f"sampler_options must not set {name!r} (the grid is what is"
                       f" calibrated; the final step lands on clean data), got"
                       f" sampler_options={options!r}")
  if isinstance(sampler, str):
    fn = samplers_lib.get(sampler)
    options = samplers_lib.check_options(sampler, options)
    nfe_fn = lambda n: samplers_lib.nfe(sampler, n, **options)
  elif callable(sampler):
    fn, nfe_fn = sampler, (lambda n: n)
  else:
    raise ValueError(f"sampler must be a registered name or a callable, got sampler={sampler!r}")
  return fn, options, nfe_fn


def calibration_loss(model_fn, schedule, x_T, reference, sampler, timesteps, *,
                     prediction="eps", sampler_options=None):
  """L = mean_i ||S(x_T^i; timesteps) - reference_i||^2 (jittable, differentiable in timesteps).

  sampler: a deterministic registered name (or callable with the sampler
  contract); it runs with `timesteps=` and its final step to clean data.
  """
  fn, options, _ = _resolve_sampler(sampler, sampler_options)
  n = jnp.shape(timesteps)[0]
  x = fn(None, model_fn, x_T, schedule, num_steps=int(n), prediction=prediction,
         timesteps=timesteps, **options)
  diff = (x - reference).reshape(x.shape[0], -1)
  return jnp.mean(jnp.sum(diff**2, axis=-1))


def _check_positive_int(name, value):
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be an int >= 1, got {name}={value!r}")
  return int(value)


def calibrate_timesteps(key, model_fn, schedule, shape, num_steps, *, sampler="unipc",
                        sampler_options=None, prediction="eps", num_samples=32768,
                        num_focus=1024, batch_size=1024, num_iters=300, learning_rate=0.05,
                        init=("time_uniform", "time_quadratic", "logsnr_uniform"),
                        reference_steps=500) -> CalibratedSteps:
  """Fits the N = num_steps evaluation times of `sampler` to the model's own PF-ODE map.

  Minimises L(theta) = 1/M sum_i ||S(x_T^i; t(theta)) - S_ref(x_T^i)||^2 (module
  docstring) over M = num_samples calibration noises x_T^i ~ N(0, c^2 I) of
  shape `shape` drawn from `key` (c = 1 for VP schedules, sigma(1) for VE), with
  S_ref UniPC-3 at `reference_steps` time-uniform steps, by `num_iters` Adam
  steps (learning rate `learning_rate`, cosine decay to a tenth) from each of
  the fixed spacings `init` (restarts: one start alone sometimes stalls); the
  best result is kept.

  Stratified minibatches (rare-event sampling): L is dominated by the few
  trajectories that the solver sends to the wrong mode, and those start near
  the boundaries between modes, i.e. among the samples that the initial grid
  already gets most wrong. The `num_focus` samples with the largest initial
  error form a stratum that is in every minibatch; `batch_size` of the other
  M - num_focus are drawn at random and weighted (M - num_focus)/batch_size, so
  every minibatch loss is an unbiased estimate of L with far less variance
  than a uniform minibatch (num_focus = 0: uniform minibatches).

  Of the last iterates and the averages of the second half of the iterates
  (Polyak-Ruppert) of all starts, the one with the lowest full calibration loss
  is kept, and only if that loss is below the best fixed spacing's. Never sees data or an analytic
  solution: the model is the only oracle. Use a key independent of the noise
  you evaluate on.

  Returns CalibratedSteps; pass `.timesteps` as the sampler's `timesteps=` with
  the same num_steps and options.
  """
  num_steps = grid_lib.check_num_steps(num_steps)
  num_samples = _check_positive_int("num_samples", num_samples)
  if isinstance(num_focus, bool) or not isinstance(num_focus, (int, np.integer)) \
      or not 0 <= num_focus < num_samples:
    raise ValueError(f"num_focus must be an int in [0, num_samples) = [0, {num_samples}),"
                     f" got num_focus={num_focus!r}")
  num_focus = int(num_focus)
  batch_size = min(_check_positive_int("batch_size", batch_size), num_samples - num_focus)
  num_iters = _check_positive_int("num_iters", num_iters)
  reference_steps = _check_positive_int("reference_steps", reference_steps)
  prediction = samplers_lib.check_prediction(prediction)
  if not (np.isfinite(learning_rate) and learning_rate > 0):
    raise ValueError(f"learning_rate must be > 0, got learning_rate={learning_rate!r}")
  if isinstance(init, str):
    init = (init,)
  init = tuple(init)
  if not init or any(s not in schedules_lib.SPACINGS or s in schedules_lib.DISCRETE_SPACINGS
                     for s in init):
    valid = [s for s in schedules_lib.SPACINGS if s not in schedules_lib.DISCRETE_SPACINGS]
    raise ValueError(f"init must be a non-empty sequence of continuous spacings {valid},"
                     f" got init={init!r}")
  shape = tuple(int(d) for d in np.atleast_1d(shape))
  if not shape or any(d < 1 for d in shape):
    raise ValueError(f"shape must be a non-empty tuple of positive sizes, got shape={shape!r}")
  _check_schedule_range(schedule)
  fn, options, nfe_fn = _resolve_sampler(sampler, sampler_options)

  scale = 1.0 if schedule.is_vp else float(schedule.sigma(jnp.float32(1.0)))
  noise_key, batch_key = jax.random.split(key)
  x_T = scale * jax.random.normal(noise_key, (num_samples,) + shape, jnp.float32)
  ref_name, ref_options = _REFERENCE
  reference = jax.jit(lambda x: samplers_lib.get(ref_name)(
      None, model_fn, x, schedule, num_steps=reference_steps, prediction=prediction,
      **ref_options))(x_T)

  def errors(t, x=x_T, ref=reference):
    """Per-sample squared distance to the reference with the grid t."""
    out = fn(None, model_fn, x, schedule, num_steps=num_steps, prediction=prediction,
             timesteps=t, **options)
    return jnp.sum((out - ref).reshape(x.shape[0], -1) ** 2, axis=-1)

  starts = []
  for spacing in init:
    t_end = grid_lib.default_t_end(schedule, num_steps, True, spacing)
    t0 = grid_lib.sampling_grid(schedule, num_steps, spacing=spacing, t_end=t_end).t[:-1]
    err = np.asarray(jax.jit(errors)(jnp.asarray(t0, jnp.float32)), np.float64)
    starts.append((float(np.mean(err)), spacing, t0, err))
  initial_loss, init_name, t_init, init_err = min(starts, key=lambda s: s[0])
  ref_nfe = samplers_lib.nfe(ref_name, reference_steps, **ref_options)
  cost = ref_nfe + len(init) * nfe_fn(num_steps)
  if num_steps == 1:
    return CalibratedSteps(jnp.ones((1,), jnp.float32), initial_loss, initial_loss, init_name,
                           int(cost), num_samples)

  order = np.argsort(-np.nan_to_num(init_err, nan=np.inf), kind="stable")
  focus, rest = jnp.asarray(order[:num_focus]), jnp.asarray(order[num_focus:])
  rest_weight = (num_samples - num_focus) / batch_size
  optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, num_iters, alpha=0.1))

  def batch_objective(theta, index):
    weights = jnp.concatenate([jnp.ones((num_focus,)), jnp.full((batch_size,), rest_weight)])
    err = errors(timesteps_from_params(schedule, theta), x_T[index], reference[index])
    return jnp.sum(weights * err) / num_samples

  @jax.jit
  def run(theta):
    def body(carry, step):
      theta, opt_state = carry
      pick = jax.random.choice(jax.random.fold_in(batch_key, step), rest.shape[0],
                               (batch_size,), replace=False)
      index = jnp.concatenate([focus, rest[pick]])
      grad = jax.grad(batch_objective)(theta, index)
      grad = jnp.where(jnp.isfinite(grad), grad, 0.0)
      updates, opt_state = optimizer.update(grad, opt_state, theta)
      theta = optax.apply_updates(theta, updates)
      return (theta, opt_state), theta

    (theta, _), thetas = jax.lax.scan(body, (theta, optimizer.init(theta)), jnp.arange(num_iters))
    # Polyak-Ruppert average of the second half of the iterates (less minibatch noise).
    candidates = jnp.stack([theta, jnp.mean(thetas[num_iters // 2:], axis=0)])
    losses = jnp.stack([jnp.mean(errors(timesteps_from_params(schedule, p))) for p in candidates])
    return candidates, losses

  # One optimisation from each initial spacing (same compiled program), best kept.
  candidates, losses = [], []
  for _, _, t_start, _ in starts:
    c, l = run(params_from_timesteps(schedule, np.asarray(t_start)))
    candidates += list(c)
    losses += list(np.asarray(l, np.float64))
  losses = np.asarray(losses)
  pick = int(np.argmin(np.where(np.isfinite(losses), losses, np.inf)))
  if losses[pick] < initial_loss:            # NaN never counts as better
    best_loss, t_best = float(losses[pick]), timesteps_from_params(schedule, candidates[pick])
  else:                                      # keep the fixed spacing if nothing improved
    best_loss, t_best = initial_loss, jnp.asarray(t_init, jnp.float32)
  per_iter = 3 * num_iters * (num_focus + batch_size) / num_samples
  cost += len(starts) * (int(np.ceil(per_iter)) + 2) * nfe_fn(num_steps)
  return CalibratedSteps(jnp.asarray(t_best, jnp.float32), best_loss, initial_loss, init_name,
                         int(cost), num_samples)
