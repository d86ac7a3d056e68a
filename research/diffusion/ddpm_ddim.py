"""DDPM (ancestral sampling) and DDIM, the two samplers on a respaced chain.

Time convention (schedules.py): continuous t in [0, 1], t = 1 is noise, t = 0 is
clean data, x_t = alpha(t) x0 + sigma(t) eps, lambda(t) = log(alpha/sigma).
Both follow the sampler contract of research/diffusion/contract.py and run on the
StepGrid of research/diffusion/grid.py: N model evaluations at t_0 = 1 > ... >
t_{N-1}, then the step to clean data (alpha = 1, sigma = 0), where the posterior
mean is x0_pred. Derivations: docs/math.md.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from research import registry
from research.diffusion import adapters
from research.diffusion import grid as grid_lib
from research.diffusion.contract import per_example_normal, register

__all__ = ["ddpm", "ddpm_nfe", "ddim", "ddim_nfe", "DDIM_SPACING", "ETA"]

DDIM_SPACING = "time_uniform"   # DDIM's default (first order), docs/samplers.md

ETA = registry.real("eta", 0.0, low=0.0, high=1.0,
                    doc="DDIM noise scale: 0 deterministic, 1 DDPM's posterior variance")


def ddpm_nfe(num_steps, **options):
  """DDPM uses one network evaluation per step."""
  del options
  return grid_lib.check_num_steps(num_steps)


def ddim_nfe(num_steps, **options):
  """DDIM uses one network evaluation per step."""
  return ddpm_nfe(num_steps, **options)


@register("ddpm", nfe=ddpm_nfe, stochastic=True,
          options=(adapters.PREDICTION,) + grid_lib.grid_options(exclude=("final_step_to_zero",)),
          grid=grid_lib.GridRule("linspace", t_end="t_min", final=True))
def ddpm(key, model_fn, x_T, schedule, *, num_steps, grid, prediction):
  """Ancestral DDPM sampling with the posterior variance (Ho et al. 2020, eq. 6-7).

  On the (respaced) chain t_0 = 1 > ... > t_{N-1} > t_N = clean data, each step
  draws x_s ~ q(x_s | x_t, x0 = x0_pred) with, for s < t,

      c = 1 - SNR(t)/SNR(s) = -expm1(2 (lambda_t - lambda_s)),
      mean = (1 - c) alpha_s / alpha_t x_t + c alpha_s x0_pred,   var = c sigma_s^2,

  which for VP is sqrt(ab_s) beta_t/(1 - ab_t) x0 + sqrt(1 - beta_t)
  (1 - ab_s)/(1 - ab_t) x_t, variance (1 - ab_s)/(1 - ab_t) beta_t, with the
  respaced beta_t = 1 - ab_t/ab_s (Nichol & Dhariwal 2021, improved DDPM
  respacing; docs/math.md). The final step (to alpha = 1, sigma = 0) returns the
  posterior mean x0_pred with no noise. Default grid: "linspace" for discrete
  schedules (num_steps = T is the full training chain 999, ..., 0), else
  "time_uniform" down to t_min. NFE = num_steps.
  """
  a, s, lam = grid.alpha, grid.sigma, grid.log_snr
  xp = grid_lib.array_module(a)
  ratio = xp.exp(2.0 * (lam[:-1] - lam[1:]))          # SNR(t)/SNR(s), 0 at the end
  c = -xp.expm1(2.0 * (lam[:-1] - lam[1:]))
  coef_x = ratio * a[1:] / a[:-1]
  coef_x0 = c * a[1:]
  noise_std = xp.sqrt(c) * s[1:]
  step_arrays = (jnp.arange(num_steps),) + grid_lib.to_device(
      grid.t[:-1], a[:-1], s[:-1], coef_x, coef_x0, noise_std)

  def step(x, inputs):
    n, t, alpha, sigma, cx, cx0, std = inputs
    x0, _ = adapters.predict_x0_eps(model_fn, x, t, alpha, sigma, prediction)
    z = per_example_normal(key, n, x)
    x = cx * x + cx0 * x0 + std * z
    return x, None

  x_T = jnp.asarray(x_T, jnp.float32)
  x, _ = jax.lax.scan(step, x_T, step_arrays)
  return x


def _ddim_stochastic(eta, **_):
  return isinstance(eta, jax.core.Tracer) or eta > 0.0


@register("ddim", nfe=ddim_nfe, stochastic=_ddim_stochastic,
          options=(adapters.PREDICTION, ETA) + grid_lib.GRID_OPTIONS,
          grid=grid_lib.GridRule(DDIM_SPACING))
def ddim(key, model_fn, x_T, schedule, *, num_steps, grid, prediction, eta):
  """DDIM (Song, Meng & Ermon 2021, eq. 12 and 16), deterministic for eta = 0.

  From t to the next time s on the grid:

      s_eta = eta sqrt((1 - ab_s)/(1 - ab_t)) sqrt(1 - ab_t/ab_s) = eta sigma_s sqrt(c),
      c = -expm1(2 (lambda_t - lambda_s)),
      x_s = alpha_s x0_pred + sqrt(sigma_s^2 - s_eta^2) eps_pred + s_eta z,

  with real noise z for eta > 0 (eta = 1 is DDPM's ancestral step with the
  posterior variance). eta = 0 is the exponential integrator DPM-Solver-1 (Lu
  et al. 2022), so it matches dpm_solver(order=1). The last step to clean data
  gives x0_pred (final_step_to_zero). NFE = num_steps.
  """
  a, s, lam = grid.alpha, grid.sigma, grid.log_snr
  stochastic = _ddim_stochastic(eta)
  xp = grid_lib.array_module(a) if not isinstance(eta, jax.core.Tracer) else jnp
  c = -xp.expm1(2.0 * (lam[:-1] - lam[1:]))
  noise_std = eta * s[1:] * xp.sqrt(c)
  coef_eps = s[1:] * xp.sqrt(xp.maximum(1.0 - (eta**2) * c, 0.0))
  coef_x0 = a[1:]
  step_arrays = (jnp.arange(num_steps),) + grid_lib.to_device(
      grid.t[:-1], a[:-1], s[:-1], coef_x0, coef_eps, noise_std)

  def step(x, inputs):
    n, t, alpha, sigma, cx0, ceps, std = inputs
    x0, eps = adapters.predict_x0_eps(model_fn, x, t, alpha, sigma, prediction)
    x = cx0 * x0 + ceps * eps
    if stochastic:
      x = x + std * per_example_normal(key, n, x)
    return x, None

  x_T = jnp.asarray(x_T, jnp.float32)
  x, _ = jax.lax.scan(step, x_T, step_arrays)
  return x
