"""Karras-style samplers: Euler, EDM Heun with churn, and Euler ancestral.

Time convention: continuous t in [0, 1], t = 1 is noise, t = 0 is clean data,
x_t = alpha(t) x0 + sigma(t) eps (research/diffusion/schedules.py). The model
contract is model_fn(x, t) -> prediction ("eps", "x0", "v" or "score") with x
in the schedule's own scale and t of shape (batch,).

The samplers integrate in the variance-exploding ("VE") form of Karras et al.
2022 ("Elucidating the design space of diffusion-based generative models",
EDM): with the noise level

    s(t) = sigma(t) / alpha(t)                    (schedule.edm_sigma)

and the rescaled state y = x / alpha(t) = x0 + s eps, the probability-flow ODE
of ANY schedule is

    dy/ds = (y - D(y; s)) / s = eps_hat(alpha y, t(s)),

where D is the denoiser E[x0 | y]. A VP model is evaluated at x = alpha(t) y,
exactly the way k-diffusion wraps VP networks (VDenoiser / DiscreteEpsDDPMDenoiser);
d = (y - D)/s is the model's noise estimate eps_hat, converted from any
prediction type. For a VP schedule an Euler step in this form is DDIM (Song et
al. 2021, eta = 0).

Scaling of x_T and of the result: x_T is given in the schedule's scale at
t = 1, i.e. x_T ~ N(0, I) for VP schedules (alpha(1)^2 Var[x0] + sigma(1)^2 ~ 1),
and x_T ~ N(0, sigma_max^2 I) for the VE schedule (alpha = 1). Internally
y_T = x_T / alpha(1). With the default final step to s = 0 the samplers land on
clean data and return y = x0 (alpha(0) = 1); with `final_step_to_zero=False`
they stop at t_end = schedule.t_min and return x = alpha(t_end) y in the
schedule's scale.

Noise levels: `num_steps` = N is the number of intervals (the StepGrid of
research/diffusion/grid.py, shared with DDIM / DPM-Solver). With the default
final step to zero, the N levels s_0 > ... > s_{N-1} at which the model is
called come from `schedules.timesteps(schedule, N - 1, spacing, rho=rho,
t_end=t_end)` (default "karras", rho = 7: s_i = (smax^(1/rho) + i/(N-1)
(smin^(1/rho) - smax^(1/rho)))^rho from smax = s(1) to smin = s(t_min)) and
s_N = 0 is appended, as in EDM and k-diffusion (diffusers' discrete spacings
"leading" / "trailing" / "linspace" give their N index times instead). The
step to s = 0 is an Euler step, i.e. y_N = D(y_{N-1}; s_{N-1}), so there is
no repeated last sigma and no zero-length step.

NFE: euler N, euler_ancestral N, heun 2N - 1 (no correction on the step to
s = 0; 2N with final_step_to_zero=False). Each sampler is one `lax.scan` over
precomputed step arrays (heun: N - 1 scanned steps plus the last one), so the
compile time does not depend on N. Noise is drawn per example
(`contract.per_example_normal`): results do not depend on the batch size.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from research import registry
from research.diffusion import adapters
from research.diffusion import grid as grid_lib
from research.diffusion.contract import check_x, per_example_normal, register

__all__ = ["euler", "heun", "euler_ancestral", "noise_levels", "euler_nfe", "heun_nfe",
           "euler_ancestral_nfe"]

DEFAULT_SPACING = "karras"
_GRID = grid_lib.GridRule(DEFAULT_SPACING, t_end="t_min")
_OPTIONS = (adapters.PREDICTION,) + grid_lib.GRID_OPTIONS
S_NOISE = registry.real("s_noise", 1.0, low=0.0, doc="scale of the added noise")


# -----------------------------------------------------------------------------
# Shared pieces.
# -----------------------------------------------------------------------------
def _is_zero(value):
  return not isinstance(value, jax.core.Tracer) and float(value) == 0.0


def _levels(schedule, grid):
  """(t, s) of a StepGrid: s = edm_sigma(t), and s_N = 0 at clean data.

  ValueError for a grid whose noise levels are not those of its times (index_rule=
  "multistep" with spacing="karras": the model at rounded indices, multistep solvers only).
  """
  s = schedule.edm_sigma(grid.t).astype(jnp.float32)
  if all(isinstance(a, np.ndarray) for a in (grid.t, grid.alpha, grid.sigma)) and \
      grid_lib.is_concrete(*jax.tree_util.tree_leaves(schedule)):
    n = grid.t.shape[0] - (1 if grid.final_step_to_zero else 0)
    with jax.ensure_compile_time_eval():
      s_of_t = np.asarray(schedule.edm_sigma(jnp.asarray(grid.t[:n], jnp.float32)), np.float64)
    if not np.allclose(s_of_t, grid.sigma[:n] / grid.alpha[:n], rtol=1e-3):
      raise ValueError("index_rule='multistep' with spacing='karras' calls the model at rounded"
                       " indices off its noise levels; the Karras samplers (euler, heun,"
                       " euler_ancestral) need levels at their times: use index_rule='ddim'")
  if grid.final_step_to_zero:
    s = s.at[-1].set(0.0)
  return grid.t, s


def noise_levels(schedule, num_steps, *, spacing=DEFAULT_SPACING, rho=7.0, t_end=None,
                 final_step_to_zero=True, timesteps=None):
  """The step grid (t, s) of the Karras samplers: times t_i and noise levels s_i = sigma/alpha.

  Returns (t, s), each of shape (num_steps + 1,), strictly decreasing from
  t_0 = 1: the grid of `grid.sampling_grid` (N model times from t = 1 to
  t_end = schedule.t_min, then clean data), with s_i = schedule.edm_sigma(t_i)
  and s_N = 0 when final_step_to_zero (also for VE, where no t has s = 0; the
  model is never called there). `timesteps`: explicit evaluation times.
  """
  return _levels(schedule, grid_lib.sampling_grid(
      schedule, num_steps, spacing=spacing, t_end=t_end, final_step_to_zero=final_step_to_zero,
      rho=rho, timesteps=timesteps))


def _eps_fn(model_fn, schedule, prediction):
  """eps_hat(y, t): the model's noise estimate at the VE-form state y (model sees alpha(t) y)."""

  def eps_at(y, t):
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    return adapters.predict(model_fn, alpha * y, t, alpha, sigma, prediction, "eps")

  return eps_at


def _finish(y, schedule, t_last, final_step_to_zero):
  """Back to the schedule's scale: y at s = 0 is x0; otherwise x = alpha(t_end) y."""
  if final_step_to_zero:
    return y
  return (schedule.alpha(t_last) * y).astype(y.dtype)


# -----------------------------------------------------------------------------
# Exact network-evaluation counts.
# -----------------------------------------------------------------------------
def euler_nfe(num_steps, **options):
  """euler: one evaluation per step, N."""
  del options
  return grid_lib.check_num_steps(num_steps)


def euler_ancestral_nfe(num_steps, **options):
  """euler_ancestral: one evaluation per step, N."""
  return euler_nfe(num_steps, **options)


def heun_nfe(num_steps, *, final_step_to_zero=True, **options):
  """heun: 2N - 1 (Euler only on the step to s = 0), 2N with final_step_to_zero=False."""
  del options
  n = grid_lib.check_num_steps(num_steps)
  return 2 * n - 1 if final_step_to_zero else 2 * n


# -----------------------------------------------------------------------------
# Samplers.
# -----------------------------------------------------------------------------
@register("euler", nfe=euler_nfe, options=_OPTIONS, grid=_GRID)
def euler(key, model_fn, x_T, schedule, *, num_steps, grid, prediction):
  """Euler sampler for the probability-flow ODE in VE form (Karras et al. 2022, Algorithm 1).

  y_{i+1} = y_i + (s_{i+1} - s_i) d_i,   d_i = (y_i - D(y_i; s_i))/s_i = eps_hat(alpha_i y_i, t_i),
  y = x / alpha, s = sigma / alpha (module docstring); for VP schedules this is
  DDIM with eta = 0. Deterministic: `key` is ignored. NFE = num_steps. First
  order in the step size.
  """
  del key, num_steps
  x_T = check_x(x_T)
  t, s = _levels(schedule, grid)
  eps_at = _eps_fn(model_fn, schedule, prediction)

  def step(y, inputs):
    t_i, s_i, s_next = inputs
    return y + (s_next - s_i) * eps_at(y, t_i), None

  y = x_T / schedule.alpha(t[0])
  y, _ = jax.lax.scan(step, y, (t[:-1], s[:-1], s[1:]))
  return _finish(y, schedule, t[-1], grid.final_step_to_zero)


def _heun_stochastic(s_churn, s_noise, **_):
  return not (_is_zero(s_churn) or _is_zero(s_noise))


@register("heun", nfe=heun_nfe, grid=_GRID, stochastic=_heun_stochastic,
          options=_OPTIONS + (
              registry.real("s_churn", 0.0, low=0.0, doc="EDM churn (0: deterministic Heun)"),
              registry.real("s_tmin", 0.0, doc="churn only for levels >= s_tmin"),
              registry.real("s_tmax", math.inf, doc="churn only for levels <= s_tmax"),
              S_NOISE))
def heun(key, model_fn, x_T, schedule, *, num_steps, grid, prediction, s_churn, s_tmin, s_tmax,
         s_noise):
  """EDM sampler: Heun's method with optional churn (Karras et al. 2022, Algorithm 2).

  For i = 0..N-1, gamma_i = min(s_churn / N, sqrt(2) - 1) if s_tmin <= s_i <= s_tmax else 0:
    s_hat = s_i (1 + gamma_i),   y_hat = y_i + sqrt(s_hat^2 - s_i^2) s_noise z_i,
    d = eps_hat(y_hat; s_hat),   y_{i+1} = y_hat + (s_{i+1} - s_hat) d,
    if s_{i+1} != 0:  d' = eps_hat(y_{i+1}; s_{i+1}),  y_{i+1} = y_hat + (s_{i+1} - s_hat)(d + d')/2.
  s_churn = 0 (default) is the deterministic second-order Heun ODE solver (then
  `key` is unused and may be None). Levels where s_hat would exceed s(t = 1),
  the largest level the network was trained on (it only knows t in [0, 1]),
  get no churn; the model is evaluated at t_hat = schedule.t_from_edm_sigma(s_hat).
  NFE = 2N - 1 (no correction on the step to s = 0; 2N with
  final_step_to_zero=False). EDM's
  tuned ImageNet-64 values: s_churn = 40, s_tmin = 0.05, s_tmax = 50, s_noise = 1.003.
  """
  n = num_steps
  x_T = check_x(x_T)
  stochastic = _heun_stochastic(s_churn, s_noise)
  if stochastic and key is None:
    raise ValueError("key must be a PRNG key when s_churn > 0 (heun with churn is stochastic)")
  t, s = _levels(schedule, grid)
  eps_at = _eps_fn(model_fn, schedule, prediction)
  s_cur = s[:-1]
  s_top = schedule.edm_sigma(jnp.float32(schedule.t_max))
  gamma = jnp.minimum(s_churn / n, math.sqrt(2.0) - 1.0)
  # Churn only inside [s_tmin, s_tmax] and where s_hat stays within the trained range.
  use = (s_cur >= s_tmin) & (s_cur <= s_tmax) & (s_cur * (1.0 + gamma) <= s_top)
  gamma = jnp.where(use, gamma, 0.0)
  s_hat = s_cur * (1.0 + gamma)
  t_hat = jnp.where(gamma > 0, schedule.t_from_edm_sigma(s_hat), t[:-1])
  # sqrt(s_hat^2 - s^2) = s sqrt(gamma (2 + gamma)): exactly 0 when gamma = 0 (no
  # cancellation, which sqrt would amplify to ~sqrt(ulp) s).
  noise_scale = s_noise * s_cur * jnp.sqrt(gamma * (2.0 + gamma))
  steps = (jnp.arange(n), t_hat, s_hat, noise_scale, t[1:], s[1:])

  def euler_part(y, inputs):
    i, t_h, s_h, scale, _, s_next = inputs
    y_hat = y
    if stochastic:
      y_hat = y + scale * per_example_normal(key, i, y)
    d = eps_at(y_hat, t_h)
    return y_hat, d, y_hat + (s_next - s_h) * d

  def heun_step(y, inputs):
    _, _, s_h, _, t_next, s_next = inputs
    y_hat, d, y_next = euler_part(y, inputs)
    d_prime = eps_at(y_next, t_next)
    return y_hat + (s_next - s_h) * 0.5 * (d + d_prime), None

  y = x_T / schedule.alpha(t[0])
  if not grid.final_step_to_zero:
    y, _ = jax.lax.scan(heun_step, y, steps)
    return _finish(y, schedule, t[-1], False)
  y, _ = jax.lax.scan(heun_step, y, jax.tree.map(lambda a: a[:-1], steps))
  _, _, y = euler_part(y, jax.tree.map(lambda a: a[-1], steps))  # last step, to s = 0: Euler
  return y


def _ancestral_stochastic(eta, s_noise, **_):
  return not (_is_zero(eta) or _is_zero(s_noise))


@register("euler_ancestral", nfe=euler_ancestral_nfe, grid=_GRID, stochastic=_ancestral_stochastic,
          options=_OPTIONS + (registry.real("eta", 1.0, low=0.0, doc="ancestral noise (0: euler)"),
                              S_NOISE))
def euler_ancestral(key, model_fn, x_T, schedule, *, num_steps, grid, prediction, eta, s_noise):
  """Ancestral Euler sampler (k-diffusion's sample_euler_ancestral, in the VE form of Karras et al. 2022).

  Each step splits s_{i+1} into a deterministic part and fresh noise:
    s_up = min(s_{i+1}, eta sqrt(s_{i+1}^2 (s_i^2 - s_{i+1}^2) / s_i^2)),
    s_down = sqrt(s_{i+1}^2 - s_up^2),
    y_{i+1} = y_i + (s_down - s_i) eps_hat(y_i; s_i) + s_noise s_up z_i.
  eta = 1 is the ancestral (DDPM-like, Ho et al. 2020) reverse-SDE step; eta = 0
  is exactly `euler`. The step to s = 0 adds no noise (s_up = 0). NFE = num_steps.
  """
  n = num_steps
  x_T = check_x(x_T)
  stochastic = _ancestral_stochastic(eta, s_noise)
  if stochastic and key is None:
    raise ValueError("key must be a PRNG key when eta > 0 (euler_ancestral is stochastic)")
  t, s = _levels(schedule, grid)
  eps_at = _eps_fn(model_fn, schedule, prediction)
  s_cur, s_next = s[:-1], s[1:]
  s_up = jnp.minimum(s_next, eta * jnp.sqrt(
      jnp.maximum(s_next**2 * (s_cur**2 - s_next**2) / s_cur**2, 0.0)))
  s_down = jnp.sqrt(jnp.maximum(s_next**2 - s_up**2, 0.0))

  def step(y, inputs):
    i, t_i, s_i, down, up = inputs
    y = y + (down - s_i) * eps_at(y, t_i)
    if stochastic:
      y = y + (s_noise * up) * per_example_normal(key, i, y)
    return y, None

  y = x_T / schedule.alpha(t[0])
  y, _ = jax.lax.scan(step, y, (jnp.arange(n), t[:-1], s_cur, s_down, s_up))
  return _finish(y, schedule, t[-1], grid.final_step_to_zero)
