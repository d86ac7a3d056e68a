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
"""
from __future__ import annotations

import jax.numpy as jnp

SIGMA_DATA = 0.5
TIMESTEP_SCALING = 10.0

__all__ = ["SIGMA_DATA", "TIMESTEP_SCALING", "boundary_scalings"]


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
