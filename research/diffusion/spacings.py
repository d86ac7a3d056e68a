"""Sampling-step spacings: the times t_0 = 1 > ... > t_N = t_end of a diffusion sampler.

Time convention (schedules.py): continuous t in [0, 1], t = 1 is noise, t = 0 is
clean data; a discrete schedule of T steps has t_n = (n + 1) / T. `timesteps`
takes any `schedules.Schedule` (it only calls its methods) and is re-exported by
research.diffusion.schedules; research/diffusion/grid.py turns these times into a
sampler's step grid.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

__all__ = ["SPACINGS", "DISCRETE_SPACINGS", "INDEX_RULES", "check_num_train_steps", "index_grid", "timesteps"]


def check_num_train_steps(T):
  """T (the number of training steps of a discrete schedule) as an int >= 1."""
  if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
    raise ValueError(f"T must be an int >= 1, got T={T!r}")
  return int(T)


# -----------------------------------------------------------------------------
# Step selection.
# -----------------------------------------------------------------------------
DISCRETE_SPACINGS = ("leading", "trailing", "linspace")
SPACINGS = ("time_uniform", "logsnr_uniform", "time_quadratic", "karras") + DISCRETE_SPACINGS


INDEX_RULES = ("ddim", "multistep", "euler")


def index_grid(num_train_steps, num_steps, spacing, *, steps_offset=0, index_rule="ddim"):
  """diffusers' timestep grid n_0 > ... > n_{num_steps-1} (numpy int64; float64 for "euler" linspace).

  With T = num_train_steps and N = num_steps, index_rule "ddim" (DDIMScheduler,
  DDPMScheduler, LCM's own grids aside; Lin et al. 2024, table 2):
    "linspace": round(linspace(0, T - 1, N))[::-1]
    "leading":  (arange(N) * (T // N))[::-1] + steps_offset
    "trailing": round(T - arange(N) * T / N) - 1
  e.g. T = 1000, N = 10: linspace 999, 888, ..., 111, 0; leading 900, 800, ..., 0;
  trailing 999, 899, ..., 99. index_rule "multistep" (DPMSolverMultistepScheduler,
  UniPCMultistepScheduler): "linspace" and "leading" are the first N points of the
  (N + 1)-point "ddim" grid (leading with the ratio T // (N + 1)), so the last model
  call is at about T / (N + 1), not at 0; "trailing" as "ddim". index_rule "euler"
  (EulerDiscreteScheduler, EulerAncestralDiscreteScheduler): "linspace" is
  linspace(0, T - 1, N) in float32 without rounding (fractional indices); "leading"
  and "trailing" as "ddim". steps_offset (diffusers' option of that name) is added to
  the "leading" grid only, as diffusers does; ValueError for steps_offset != 0 with
  another spacing or an index above T - 1.
  """
  T = check_num_train_steps(num_train_steps)
  if spacing not in DISCRETE_SPACINGS:
    raise ValueError(f"spacing must be one of {DISCRETE_SPACINGS}, got spacing={spacing!r}")
  if index_rule not in INDEX_RULES:
    raise ValueError(f"index_rule must be one of {INDEX_RULES}, got index_rule={index_rule!r}")
  if isinstance(steps_offset, bool) or not isinstance(steps_offset, (int, np.integer)) \
      or steps_offset < 0:
    raise ValueError(f"steps_offset must be an int >= 0, got steps_offset={steps_offset!r}")
  if steps_offset and spacing != "leading":
    raise ValueError(f"steps_offset applies to spacing 'leading' only (diffusers ignores it for"
                     f" {spacing!r}), got steps_offset={steps_offset!r}")
  N = num_steps
  extra = 1 if index_rule == "multistep" and spacing != "trailing" else 0
  if N + extra > T:
    raise ValueError(f"num_steps must be <= num_train_steps = {T - extra} for spacing {spacing!r}"
                     f" (index_rule {index_rule!r}), got num_steps={num_steps}")
  M = N + extra
  if spacing == "linspace" and index_rule == "euler":
    return np.linspace(0, T - 1, N, dtype=np.float32)[::-1].astype(np.float64)
  if spacing == "linspace":
    grid = np.round(np.linspace(0, T - 1, M))[::-1]
  elif spacing == "leading":
    grid = (np.arange(M) * (T // M))[::-1] + int(steps_offset)
  else:
    grid = np.round(T - np.arange(N) * (T / N)) - 1
  grid = grid[:N].astype(np.int64)
  if grid[0] > T - 1:
    raise ValueError(f"steps_offset={steps_offset} puts the first index at {grid[0]} > T - 1 ="
                     f" {T - 1}")
  return grid


def timesteps(schedule, num_steps: int, spacing: str = "logsnr_uniform", *,
              rho: float = 7.0, t_end: float | None = None, steps_offset: int = 0,
              index_rule: str = "ddim"):
  """Sampling times t_0 = 1 > t_1 > ... > t_N = t_end for N = num_steps steps, shape (N + 1,).

  Continuous spacings (any schedule; default t_end = schedule.t_min):
    "time_uniform":   t_i = 1 + i/N (t_end - 1) (Ho et al. 2020; Song et al. 2021).
    "logsnr_uniform": lambda(t_i) uniform between lambda(1) and lambda(t_end)
                      (Lu et al. 2022, DPM-Solver's choice for few steps; t_end > 0 for VP).
    "time_quadratic": t_i = (1 + i/N (sqrt(t_end) - 1))^2 (Lu et al. 2022, "time_quadratic").
    "karras":         edm_sigma(t_i) = (smax^(1/rho) + i/N (smin^(1/rho) - smax^(1/rho)))^rho,
                      smax = edm_sigma(1), smin = edm_sigma(t_end) (Karras et al. 2022, eq. 5).
  Discrete spacings (discrete schedules only): t_i = (n_i + 1)/T for the first N
  points, with n_i = `index_grid(T, N, spacing)` (diffusers' "leading",
  "trailing", "linspace"), and t_N = t_end, default 0 (diffusers' final step to
  alpha_bar = 1, i.e. clean data); t_end must lie below (n_{N-1} + 1)/T; steps_offset
  and index_rule select diffusers' per-scheduler variants (`index_grid`). Note that
  "leading" starts below t = 1 (at n_0 = (N - 1)(T // N)), exactly as in
  diffusers -- the flaw pointed out by Lin et al. 2024 -- and so does "linspace"
  with num_steps = 1 (its grid is [0]); "trailing" always starts at t = 1.

  The endpoints are set exactly; times are strictly decreasing (no repeated last
  sigma, hence no zero-length step). num_steps is a static Python int; the
  schedule may be traced. Samplers decide separately whether to add a final
  step to t = 0. Raises ValueError for num_steps < 1, an unknown spacing, a
  discrete spacing on a continuous schedule, rho <= 0, or t_end outside its range.
  """
  if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
    raise ValueError(f"num_steps must be an int >= 1, got num_steps={num_steps!r}")
  if spacing not in SPACINGS:
    raise ValueError(f"unknown spacing {spacing!r}; valid spacings: {list(SPACINGS)}")
  if not rho > 0:
    raise ValueError(f"rho must be > 0, got rho={rho!r}")
  N = int(num_steps)

  if spacing in DISCRETE_SPACINGS:
    if not schedule.is_discrete:
      raise ValueError(f"spacing {spacing!r} needs a discrete schedule (num_train_steps > 0), "
                       f"got kind {schedule.kind!r}")
    T = schedule.num_train_steps
    grid_t = (index_grid(T, N, spacing, steps_offset=steps_offset, index_rule=index_rule)
              + 1.0) / T
    t_end = 0.0 if t_end is None else float(t_end)
    if not 0.0 <= t_end < grid_t[-1]:
      raise ValueError(f"t_end must lie in [0, {grid_t[-1]}) for spacing {spacing!r} with "
                       f"num_steps={N}, got t_end={t_end!r}")
    return jnp.asarray(np.concatenate([grid_t, [t_end]]), jnp.float32)

  if steps_offset or index_rule != "ddim":
    raise ValueError(f"steps_offset and index_rule apply to the discrete spacings"
                     f" {DISCRETE_SPACINGS}, got spacing={spacing!r} with steps_offset="
                     f"{steps_offset!r}, index_rule={index_rule!r}")
  t_end = schedule.t_min if t_end is None else float(t_end)
  if not 0.0 <= t_end < 1.0:
    raise ValueError(f"t_end must lie in [0, 1), got t_end={t_end!r}")
  frac = jnp.arange(N + 1, dtype=jnp.float32) / N
  t_hi, t_lo = jnp.float32(1.0), jnp.float32(t_end)
  if spacing == "time_uniform":
    t = t_hi + frac * (t_lo - t_hi)
  elif spacing == "time_quadratic":
    t = (1.0 + frac * (jnp.sqrt(t_lo) - 1.0)) ** 2
  elif spacing == "logsnr_uniform":
    if schedule.is_vp and t_end <= 0:
      raise ValueError(f"t_end must be > 0 for spacing 'logsnr_uniform' on a VP schedule "
                       f"(lambda(0) = inf), got t_end={t_end!r}")
    lam_hi, lam_lo = schedule.log_snr(t_hi), schedule.log_snr(t_lo)
    t = schedule.t_from_log_snr(lam_hi + frac * (lam_lo - lam_hi))
  else:  # karras
    s_hi = schedule.edm_sigma(t_hi) ** (1.0 / rho)
    s_lo = schedule.edm_sigma(t_lo) ** (1.0 / rho)
    t = schedule.t_from_edm_sigma((s_hi + frac * (s_lo - s_hi)) ** rho)
  return t.astype(jnp.float32).at[0].set(1.0).at[-1].set(t_end)
