"""The linear multistep engine of the exponential integrators, and singlestep DPM-Solver.

Time convention (schedules.py): continuous t in [0, 1], t = 1 is noise,
lambda(t) = log(alpha/sigma). The grid is a research/diffusion/grid.py StepGrid:
N model evaluations at t_0 = 1 > ... > t_{N-1}, then (final_step_to_zero) the
first-order data step x = x0_pred(x_{N-1}, t_{N-1}) to clean data (the
DPM-Solver(++) step to sigma = 0, which has h = inf).

Order schedule of the multistep methods: warm-up order min(order, i + 1) at step
i, and with lower_order_final and N < 15 steps also min(order, N - i) (Lu et al.
2022b; diffusers), so the step before the final denoising one is at most second
order; the final step to sigma = 0 is first order.

Every multistep method is linear in (x, the last model outputs), so its per-step
coefficients (dpm_coefs.py) are precomputed from the lambda grid into arrays and
the loop is one `lax.scan` with one network evaluation per step:

    evaluate m = model(x_i) (as eps or x0);
    corrector (UniPC only): x_i <- a x_{i-1} + sum_j c_j m_{i-j} (uses m_i, no extra NFE);
    predictor: x_{i+1} = b x_i + sum_j d_j m_{i-j} (+ noise for SDE-DPM-Solver++).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from research.diffusion import adapters
from research.diffusion import grid as grid_lib
from research.diffusion.contract import per_example_normal
from research.diffusion.dpm_coefs import geometry, phi, unit

__all__ = ["LOWER_ORDER_FINAL_MAX_STEPS", "SINGLESTEP_R", "order_schedule", "Coefs", "assemble",
           "run_multistep", "n_ode_steps", "empty_coefs", "singlestep"]

# lower_order_final applies below this many steps (DPM-Solver++ / diffusers).
LOWER_ORDER_FINAL_MAX_STEPS = 15
# Intermediate points of singlestep DPM-Solver-2 / -3 (Lu et al. 2022, Alg. 4-5).
SINGLESTEP_R = {2: (0.5,), 3: (1.0 / 3.0, 2.0 / 3.0)}


def order_schedule(num_steps, order, *, lower_order_final=True,
                   final_step_to_zero=True):
  """Per-step orders of an N-step multistep solver (a static numpy int array).

  p_i = min(order, i + 1) (warm-up: only i earlier outputs exist); with
  lower_order_final and N < 15 also p_i <= N - i (Lu et al. 2022b, sec. 5;
  diffusers' lower_order_final / lower_order_second); the final step to sigma = 0
  is first order.
  """
  n = grid_lib.check_num_steps(num_steps)
  i = np.arange(n)
  p = np.minimum(order, i + 1)
  if lower_order_final and n < LOWER_ORDER_FINAL_MAX_STEPS:
    p = np.minimum(p, n - i)
  if final_step_to_zero:
    p[-1] = 1
  return p.astype(np.int32)



# ----------------------------------------------------------------------------
# The linear multistep engine.
# ----------------------------------------------------------------------------
class Coefs(NamedTuple):
  """Per-step coefficients (leading axis = step) of the multistep engine.

  corrector:  x_c = keep x + cx x_last + sum_j cm[j] [m_new, m_{i-1}, m_{i-2}, m_{i-3}][j]
  predictor:  x_next = px x_c + pu x + sum_j pm[j] [m_i, m_{i-1}, m_{i-2}][j] + pz z
  """
  keep: jax.Array   # (N,)
  cx: jax.Array     # (N,)
  cm: jax.Array     # (N, 4)
  px: jax.Array     # (N,)
  pu: jax.Array     # (N,)
  pm: jax.Array     # (N, 3)
  pz: jax.Array     # (N,)


def assemble(grid, n_steps, px, pm, pz, cm, target, corrected_final):
  """Full (N,) coefficient arrays: ODE steps, corrector rows shifted by one, final step.

  Row i holds the corrector that runs after the evaluation at point i (the
  corrector of ODE step i - 1) and the predictor of step i; the last row is the
  final step to clean data when grid.final_step_to_zero.
  """
  xp = grid_lib.array_module(grid.alpha)
  n_ode = px.shape[0]
  pad_rows = lambda v, front, back: xp.concatenate(
      [xp.zeros((front,) + v.shape[1:]), v, xp.zeros((back,) + v.shape[1:])])
  rows = min(n_ode, n_steps - 1) if cm is not None else 0
  keep = xp.asarray(np.concatenate([[1.0], np.zeros(rows),
                                    np.ones(n_steps - 1 - rows)]))
  cx = pad_rows(px[:rows], 1, n_steps - 1 - rows)
  cm_full = (pad_rows(cm[:rows], 1, n_steps - 1 - rows) if cm is not None
             else xp.zeros((n_steps, 4)))
  px_full = pad_rows(px, 0, n_steps - n_ode)
  pz_full = pad_rows(pz, 0, n_steps - n_ode)
  pm_full = pad_rows(pm, 0, n_steps - n_ode)
  pu = xp.zeros((n_steps,))
  if grid.final_step_to_zero:
    a_end, s_end = grid.alpha[n_steps - 1], grid.sigma[n_steps - 1]
    last = np.arange(n_steps) == n_steps - 1
    last_col = last[:, None]
    if target == "x0":
      # x0_pred at the (corrected) last point: x0(x_c) ~ m + (x_c - x)/alpha,
      # i.e. the data step written through eps = (x - alpha m)/sigma, which
      # keeps the last correction (exactly m without a corrector).
      if corrected_final:
        px_full = xp.where(last, 1.0 / a_end, px_full)
        pu = xp.where(last, -1.0 / a_end, pu)
      pm_full = xp.where(last_col, unit(xp), pm_full)
    else:
      px_full = xp.where(last, 1.0 / a_end, px_full)
      pm_full = xp.where(last_col, -unit(xp) * s_end / a_end, pm_full)
  return Coefs(*grid_lib.to_device(keep, cx, cm_full, px_full, pu,
                                        pm_full, pz_full))


def run_multistep(key, model_fn, x_T, grid, coefs, prediction, target,
                   stochastic):
  """One lax.scan: evaluate, correct, predict (see the module docstring)."""
  x_T = jnp.asarray(x_T, jnp.float32)
  n_steps = coefs.px.shape[0]
  t, alpha, sigma = grid_lib.to_device(
      grid.t[:n_steps], grid.alpha[:n_steps], grid.sigma[:n_steps])

  def step(carry, inputs):
    x, x_last, hist = carry
    n, t_i, a_i, s_i, c = inputs
    m = adapters.predict(model_fn, x, t_i, a_i, s_i, prediction, target)
    x_c = (c.keep * x + c.cx * x_last + c.cm[0] * m + c.cm[1] * hist[0]
           + c.cm[2] * hist[1] + c.cm[3] * hist[2])
    hist = jnp.stack([m, hist[0], hist[1]])
    x_next = (c.px * x_c + c.pu * x + c.pm[0] * hist[0] + c.pm[1] * hist[1]
              + c.pm[2] * hist[2])
    if stochastic:
      x_next = x_next + c.pz * per_example_normal(key, n, x)
    return (x_next, x_c, hist), None

  hist0 = jnp.zeros((3,) + x_T.shape, x_T.dtype)
  (x, _, _), _ = jax.lax.scan(
      step, (x_T, x_T, hist0), (jnp.arange(n_steps), t, alpha, sigma, coefs))
  return x


def n_ode_steps(grid):
  n_points = grid.t.shape[0]
  return n_points - 2 if grid.final_step_to_zero else n_points - 1


def empty_coefs(grid):
  xp = grid_lib.array_module(grid.alpha)
  return xp.zeros((0,)), xp.zeros((0, 3)), xp.zeros((0,))


# ----------------------------------------------------------------------------
# Singlestep DPM-Solver-2 / -3.
# ----------------------------------------------------------------------------
def singlestep(model_fn, x_T, schedule, grid, order, prediction):
  """Singlestep DPM-Solver-k (noise prediction), fixed order k per step (Lu et al. 2022, Alg. 4-5).

  k = 1: x' = alpha'/alpha x - sigma' expm1(h) e_0 (DDIM).
  k = 2 (r = 1/2): u = alpha_s/alpha x - sigma_s expm1(r h) e_0, e_1 = eps(u, s),
     x' = alpha'/alpha x - sigma' expm1(h) e_0 - sigma'/(2r) expm1(h) (e_1 - e_0).
  k = 3 (r1 = 1/3, r2 = 2/3): u1 as above at s1, e_1 = eps(u1, s1),
     u2 = alpha_s2/alpha x - sigma_s2 expm1(r2 h) e_0 - r2/r1 sigma_s2 (expm1(r2 h)/(r2 h) - 1)(e_1 - e_0),
     e_2 = eps(u2, s2), x' = alpha'/alpha x - sigma' expm1(h) e_0 - sigma'/r2 (expm1(h)/h - 1)(e_2 - e_0).
  """
  n_ode = n_ode_steps(grid)
  x = jnp.asarray(x_T, jnp.float32)
  to_device = grid_lib.to_device
  if n_ode > 0:
    g = geometry(grid, n_ode)
    xp, h = g.xp, g.h
    rs = SINGLESTEP_R.get(order, ())
    mids = []
    for r in rs:
      with jax.ensure_compile_time_eval():
        t_mid = schedule.t_from_log_snr(
            jnp.asarray(grid.log_snr[:n_ode] + r * h, jnp.float32))
        a_mid, s_mid = schedule.alpha(t_mid), schedule.sigma(t_mid)
      if xp is np and grid_lib.is_concrete(t_mid, a_mid, s_mid):
        a_mid, s_mid = np.asarray(a_mid, np.float64), np.asarray(s_mid, np.float64)
      mids.append(to_device(t_mid, a_mid, a_mid / g.alpha_cur, s_mid,
                            r * h * phi(1, r * h, xp), phi(1, r * h, xp) - 1.0))
    inputs = (to_device(grid.t[:n_ode], g.alpha_cur, g.sigma_cur,
                        g.alpha_next / g.alpha_cur, g.sigma_next,
                        h * phi(1, h, xp), h * phi(2, h, xp)), tuple(mids))

    def eps_at(x, t, a, s):
      return adapters.predict(model_fn, x, t, a, s, prediction, "eps")

    def step(x, inp):
      (t, a, s, ratio, s_next, e1, e2), mids = inp
      e0 = eps_at(x, t, a, s)
      x_lin = ratio * x - s_next * e1 * e0
      if order == 1:
        return x_lin, None
      if order == 2:
        (t1, a1, ratio1, s1, em1, _), = mids
        u1 = ratio1 * x - s1 * em1 * e0
        m1 = eps_at(u1, t1, a1, s1)
        return x_lin - s_next / (2 * rs[0]) * e1 * (m1 - e0), None
      (t1, a1, ratio1, s1, em1, _), (t2, a2, ratio2, s2, em2, p22) = mids
      r1, r2 = rs
      u1 = ratio1 * x - s1 * em1 * e0
      m1 = eps_at(u1, t1, a1, s1)
      u2 = ratio2 * x - s2 * em2 * e0 - r2 / r1 * s2 * p22 * (m1 - e0)
      m2 = eps_at(u2, t2, a2, s2)
      return x_lin - s_next / r2 * e2 * (m2 - e0), None

    x, _ = jax.lax.scan(step, x, inputs)
  if grid.final_step_to_zero:
    t_i, a_i, s_i = to_device(grid.t[n_ode], grid.alpha[n_ode], grid.sigma[n_ode])
    eps = adapters.predict(model_fn, x, t_i, a_i, s_i, prediction, "eps")
    x = (x - s_i * eps) / a_i
  return x
