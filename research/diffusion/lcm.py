"""Latent consistency models (LCM, Luo et al. 2023): the boundary-condition scalings.

Time convention: the DDPM index n in [0, T - 1] of a discrete VP schedule (the
network's time input, schedules.Schedule.model_time(t) = T t - 1), as in the LCM
paper and diffusers' LCMScheduler.

An LCM student is an eps-prediction network eps_theta(x, n, w); its consistency
function is

    f(x, n) = c_skip(n) x + c_out(n) x0_pred(x, n),
    x0_pred = (x - sqrt(1 - alpha_bar_n) eps_theta) / sqrt(alpha_bar_n),

with (LCM sec. 4.2; diffusers' get_scalings_for_boundary_condition_discrete)

    c_skip(n) = sigma_data^2 / ((s n)^2 + sigma_data^2),
    c_out(n)  = s n / sqrt((s n)^2 + sigma_data^2),

sigma_data = 0.5 and timestep_scaling s = 10, so f(x, 0) = x exactly
(c_skip(0) = 1, c_out(0) = 0) and f ~ x0_pred for n >> sigma_data / s.

The `lcm` sampler (LCM's multistep consistency sampling, Luo et al. 2023, Algorithm 3;
diffusers' LCMScheduler step for step) follows the sampler contract of
research/diffusion/contract.py in continuous time (t = 1 noise, t = 0 data; a
discrete schedule's index n is t = (n + 1)/T, schedule.model_time(t) = n):

    for i = 0..N-1:   x0_i = (x - sqrt(1 - ab(n_i)) eps(x, n_i)) / sqrt(ab(n_i)),
                      d_i  = c_out(n_i) x0_i + c_skip(n_i) x,
                      x    = sqrt(ab(n_{i+1})) d_i + sqrt(1 - ab(n_{i+1})) z_i   (i < N - 1),
    result d_{N-1} (no noise after the last step),

on the indices n_i of `lcm_timesteps` (diffusers' set_timesteps with strength 1).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from research import registry
from research.diffusion import adapters
from research.diffusion import grid as grid_lib
from research.diffusion.contract import check_x, per_example_normal, register

SIGMA_DATA = 0.5
TIMESTEP_SCALING = 10.0
ORIGINAL_INFERENCE_STEPS = 50

__all__ = ["SIGMA_DATA", "TIMESTEP_SCALING", "ORIGINAL_INFERENCE_STEPS", "boundary_scalings",
           "lcm_timesteps", "lcm", "lcm_nfe"]


def boundary_scalings(timestep, *, sigma_data: float = SIGMA_DATA,
                      timestep_scaling: float = TIMESTEP_SCALING):
  """(c_skip, c_out) at DDPM index `timestep` (any shape; float32).

  c_skip = sd^2 / ((s n)^2 + sd^2), c_out = s n / sqrt((s n)^2 + sd^2) (LCM, Luo et al.
  2023). ValueError for sigma_data <= 0 or timestep_scaling <= 0.
  """
  if not float(sigma_data) > 0:
    raise ValueError(f"sigma_data must be > 0, got sigma_data={sigma_data!r}")
  if not float(timestep_scaling) > 0:
    raise ValueError(f"timestep_scaling must be > 0, got timestep_scaling={timestep_scaling!r}")
  scaled = jnp.asarray(timestep, jnp.float32) * jnp.float32(timestep_scaling)
  sd2 = jnp.float32(sigma_data) ** 2
  c_skip = sd2 / (scaled ** 2 + sd2)
  c_out = scaled * jnp.reciprocal(jnp.sqrt(scaled ** 2 + sd2))
  return c_skip, c_out


def lcm_timesteps(num_train_steps, num_steps, original_inference_steps=ORIGINAL_INFERENCE_STEPS):
  """LCM's DDPM indices n_0 > ... > n_{N-1} (numpy int64), diffusers' LCMScheduler.set_timesteps.

  With T = num_train_steps, M = original_inference_steps (the distillation's
  skipping-step grid) and N = num_steps (strength 1):

      k = T // M,   origin = (M, M - 1, ..., 1) k - 1,
      n_i = origin[floor(i M / N)],   i = 0..N-1,

  e.g. T = 1000, M = 50: N = 1 -> [999]; N = 4 -> [999, 759, 499, 259]. ValueError
  naming the argument for M > T or N > M (diffusers' limits) or a non-int.
  """
  T = registry.check_int("num_train_steps", num_train_steps, minimum=1)
  M = registry.check_int("original_inference_steps", original_inference_steps, minimum=1)
  N = registry.check_int("num_steps", num_steps, minimum=1)
  if M > T:
    raise ValueError(f"original_inference_steps must be <= num_train_steps = {T}, got"
                     f" original_inference_steps={M}")
  if N > M:
    raise ValueError(f"num_steps must be <= original_inference_steps = {M} (LCM's steps are a"
                     f" subset of its {M}-step grid), got num_steps={N}")
  origin = (np.arange(M, 0, -1, dtype=np.int64) * (T // M)) - 1
  picks = np.floor(np.linspace(0, M, num=N, endpoint=False)).astype(np.int64)
  return origin[picks]


def lcm_nfe(num_steps, **options):
  """lcm: one network evaluation per step, N."""
  del options
  return grid_lib.check_num_steps(num_steps)


def _check_schedule(schedule):
  if not (getattr(schedule, "is_discrete", False) and schedule.is_vp):
    raise ValueError(f"schedule must be a discrete VP schedule (schedules.discrete_vp; LCM's"
                     f" indices and boundary scalings are DDPM indices), got schedule kind"
                     f" {getattr(schedule, 'kind', schedule)!r}")


@register("lcm", nfe=lcm_nfe, stochastic=True, requires="consistency_distilled",
          options=(adapters.PREDICTION,
                   registry.integer("original_inference_steps", ORIGINAL_INFERENCE_STEPS,
                                    minimum=1, doc="the distillation's skipping-step grid size"),
                   registry.real("timestep_scaling", TIMESTEP_SCALING, low=0.0, low_open=True,
                                 doc="s in c_skip, c_out (the DDPM index is scaled by s)"),
                   grid_lib.TIMESTEPS))
def lcm(key, model_fn, x_T, schedule, *, num_steps, prediction, original_inference_steps,
        timestep_scaling, timesteps):
  """LCM multistep sampling (Luo et al. 2023, Algorithm 3), diffusers' LCMScheduler step for step.

  At each index n_i of `lcm_timesteps(T, N, original_inference_steps)` (t_i = (n_i + 1)/T):
  x0 = (x - sqrt(1 - ab) eps)/sqrt(ab) (any prediction, converted by adapters),
  denoised = c_out(n_i) x0 + c_skip(n_i) x (`boundary_scalings` with timestep_scaling),
  then x = sqrt(ab(n_{i+1})) denoised + sqrt(1 - ab(n_{i+1})) z with per-example
  noise z (contract.per_example_normal(key, i, x)); the last step returns denoised
  with no noise (so N = 1 is deterministic, key may be None). `timesteps`: explicit
  evaluation times t_0 > ... > t_{N-1} in (0, 1] instead (index n = T t - 1, which
  need not be an integer). Discrete VP schedules only (ValueError naming schedule).
  NFE = num_steps.
  """
  _check_schedule(schedule)
  x_T = check_x(x_T)
  n = num_steps
  T = schedule.num_train_steps
  if timesteps is None:
    index = lcm_timesteps(T, n, original_inference_steps)
    t = jnp.asarray((index + 1.0) / T, jnp.float32)
    index = jnp.asarray(index, jnp.float32)       # exact integers, as diffusers scales them
  else:
    t = jnp.asarray(grid_lib.check_timesteps(timesteps, n), jnp.float32)
    index = schedule.model_time(t)
  c_skip, c_out = boundary_scalings(index, timestep_scaling=timestep_scaling)
  alpha, sigma = schedule.alpha(t), schedule.sigma(t)
  # The re-noising level of step i is that of step i + 1; the last step adds none.
  alpha_next = jnp.concatenate([alpha[1:], jnp.ones((1,), jnp.float32)])
  sigma_next = jnp.concatenate([sigma[1:], jnp.zeros((1,), jnp.float32)])
  noisy = n > 1
  if noisy and key is None:
    raise ValueError("key must be a PRNG key for lcm with num_steps > 1 (it re-injects noise)")

  def step(x, inputs):
    i, t_i, a_i, s_i, skip, out, a_next, s_next = inputs
    x0 = adapters.predict(model_fn, x, t_i, a_i, s_i, prediction, "x0")
    denoised = out * x0 + skip * x
    if not noisy:
      return denoised, None
    z = per_example_normal(key, i, x)
    return jnp.where(i < n - 1, a_next * denoised + s_next * z, denoised), None

  x, _ = jax.lax.scan(step, x_T, (jnp.arange(n), t, alpha, sigma, c_skip, c_out, alpha_next,
                                  sigma_next))
  return x
