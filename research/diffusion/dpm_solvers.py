"""Exponential-integrator ODE samplers: DPM-Solver, DPM-Solver++ and UniPC.

Time convention (schedules.py): continuous t in [0, 1], t = 1 is noise,
x_t = alpha(t) x0 + sigma(t) eps, lambda(t) = log(alpha/sigma) increases as t
decreases. Everything is done in lambda: on a step from lambda_i to lambda_{i+1}
the step size is h = lambda_{i+1} - lambda_i > 0 and the linear part of the
probability-flow ODE is integrated exactly,

    noise form (DPM-Solver, Lu et al. 2022):
      x_{i+1} = alpha_{i+1}/alpha_i x_i - sigma_{i+1} int_0^h e^u eps(lambda_i + u) du,
    data form (DPM-Solver++, Lu et al. 2022b; UniPC, Zhao et al. 2023):
      x_{i+1} = sigma_{i+1}/sigma_i x_i + alpha_{i+1} int_0^h e^{u - h} x0(lambda_i + u) du,

with the model output expanded in lambda (Taylor / multistep differences). The
integrals are phi-functions phi_k(z) = sum_j z^j/(j + k)! (phi_1(z) = expm1(z)/z,
phi_{k+1} = (phi_k - 1/k!)/z), evaluated here without cancellation (a series for
|z| < 1, the expm1 recursion above), so h -> 0 is safe in float32.

Steps (shared with samplers.py): num_steps = N model evaluations at t_0 = 1 >
... > t_{N-1} = t_end, then (final_step_to_zero=True, the default) the last step
lands on clean data with the first-order data step x = x0_pred(x_{N-1}, t_{N-1})
(the DPM-Solver(++) step to sigma = 0). Defaults (samplers.DEFAULT_SPACING,
samplers.default_t_end): time-quadratic steps ending at t_end = max(t_min,
(1.5/N)^2), measured to be the most accurate per NFE on analytic mixtures of
data scale ~1. Every sampler also takes `timesteps=` (the N evaluation times,
e.g. the model-calibrated grid of research.diffusion.steps).

Order schedule of the multistep methods: warm-up order min(order, i + 1) at step
i, and with lower_order_final (default) and N < 15 steps also min(order, N - i)
(Lu et al. 2022b; diffusers), so the step before the final denoising one is at
most second order. The final step to sigma = 0 is first order (it has h = inf).

Implementation: every multistep method is linear in (x, the last model outputs),
so its per-step coefficients are precomputed from the lambda grid into arrays and
the loop is one `lax.scan` with one network evaluation per step:

    evaluate m = model(x_i) (as eps or x0);
    corrector (UniPC only): x_i <- a x_{i-1} + sum_j c_j m_{i-j} (uses m_i, no extra NFE);
    predictor: x_{i+1} = b x_i + sum_j d_j m_{i-j} (+ noise for SDE-DPM-Solver++).

NFE: multistep methods and UniPC N; singlestep DPM-Solver-k k (N - 1) + 1
with the final step to zero, k N without it.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from research.diffusion import samplers as samplers_lib

__all__ = [
    "phi",
    "order_schedule",
    "dpm_solver",
    "dpm_solver_nfe",
    "dpm_solver_pp",
    "dpm_solver_pp_nfe",
    "unipc",
    "unipc_nfe",
    "LOWER_ORDER_FINAL_MAX_STEPS",
]

MAX_ORDER = 3
# lower_order_final applies below this many steps (DPM-Solver++ / diffusers).
LOWER_ORDER_FINAL_MAX_STEPS = 15
# Intermediate points of singlestep DPM-Solver-2 / -3 (Lu et al. 2022, Alg. 4-5).
SINGLESTEP_R = {2: (0.5,), 3: (1.0 / 3.0, 2.0 / 3.0)}

_SOLVER_TYPES = ("midpoint", "taylor")
_METHODS = ("multistep", "singlestep")
_UNIPC_VARIANTS = ("bh1", "bh2")


# ----------------------------------------------------------------------------
# phi-functions and order schedules.
# ----------------------------------------------------------------------------
def phi(k: int, z, xp=jnp):
  """phi_k(z) = sum_{j>=0} z^j / (j + k)!, k >= 1, elementwise and cancellation-free.

  phi_1(z) = expm1(z)/z, phi_{k+1}(z) = (phi_k(z) - 1/k!)/z (Hochbruck &
  Ostermann 2010, exponential integrators): the recursion for |z| >= 1, a
  16-term Taylor series for |z| < 1 (error < 1e-13 relative). xp = numpy
  (float64, trace-time coefficients) or jax.numpy.
  """
  z = xp.asarray(z, np.float64 if xp is np else jnp.float32)
  small = xp.abs(z) < 1.0
  zs = xp.where(small, z, 0.0)
  series = xp.zeros_like(z)
  for j in reversed(range(16)):
    series = series * zs + 1.0 / math.factorial(j + k)
  zl = xp.where(small, 1.0, z)
  direct = xp.expm1(zl) / zl
  for m in range(1, k):
    direct = (direct - 1.0 / math.factorial(m)) / zl
  return xp.where(small, series, direct)


def _check_order(order, allowed=(1, 2, 3)):
  if isinstance(order, bool) or not isinstance(order, (int, np.integer)) \
      or order not in allowed:
    raise ValueError(f"order must be one of {list(allowed)}, got order={order!r}")
  return int(order)


def _check_choice(name, value, choices):
  if value not in choices:
    raise ValueError(f"unknown {name}={value!r}; valid: {list(choices)}")
  return value


def order_schedule(num_steps, order, *, lower_order_final=True,
                   final_step_to_zero=True):
  """Per-step orders of an N-step multistep solver (a static numpy int array).

  p_i = min(order, i + 1) (warm-up: only i earlier outputs exist); with
  lower_order_final and N < 15 also p_i <= N - i (Lu et al. 2022b, sec. 5;
  diffusers' lower_order_final / lower_order_second); the final step to sigma = 0
  is first order.
  """
  n = samplers_lib.check_num_steps(num_steps)
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
class _Coefs(NamedTuple):
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


class _Geometry(NamedTuple):
  """lambda-grid quantities of the ODE steps i = 0..n-1 (from point i to i + 1)."""
  h: jax.Array            # lambda_{i+1} - lambda_i
  r1: jax.Array           # (lambda_i - lambda_{i-1}) / h      (DPM-Solver's r0)
  r2: jax.Array           # (lambda_{i-1} - lambda_{i-2}) / h  (DPM-Solver's r1)
  alpha_cur: jax.Array
  sigma_cur: jax.Array
  alpha_next: jax.Array
  sigma_next: jax.Array
  xp: object              # numpy (concrete grid, float64) or jax.numpy


def _geometry(grid, n_ode):
  xp = samplers_lib.array_module(grid.log_snr)
  lam = grid.log_snr[:n_ode + 1]
  h = lam[1:] - lam[:-1]
  # Placeholders before the first step (those coefficients are never selected):
  # pretend the earlier steps had the same size, which keeps everything finite.
  lam_p1 = xp.concatenate([lam[:1] - h[:1], lam[:n_ode - 1]])
  lam_p2 = xp.concatenate([lam_p1[:1] - h[:1], lam_p1[:n_ode - 1]])
  return _Geometry(
      h=h,
      r1=(lam[:-1] - lam_p1) / h,
      r2=(lam_p1 - lam_p2) / h,
      alpha_cur=grid.alpha[:n_ode], sigma_cur=grid.sigma[:n_ode],
      alpha_next=grid.alpha[1:n_ode + 1], sigma_next=grid.sigma[1:n_ode + 1],
      xp=xp)


def _col(v):
  return v[:, None]


def _differences(g):
  """DPM-Solver's D1_0, D1, D2 as coefficient vectors over [m_i, m_{i-1}, m_{i-2}].

  D1_0 = (m_i - m_{i-1})/r0, D1_1 = (m_{i-1} - m_{i-2})/r1,
  D1 = D1_0 + r0/(r0 + r1) (D1_0 - D1_1), D2 = (D1_0 - D1_1)/(r0 + r1)
  (Lu et al. 2022b, Alg. 2 / official multistep_dpm_solver_third_update).
  """
  xp = g.xp
  one = xp.ones_like(g.h)
  zero = xp.zeros_like(g.h)
  d10 = xp.stack([one / g.r1, -one / g.r1, zero], axis=-1)
  d11 = xp.stack([zero, one / g.r2, -one / g.r2], axis=-1)
  s = _col(g.r1 + g.r2)
  d1 = d10 + _col(g.r1) / s * (d10 - d11)
  d2 = (d10 - d11) / s
  return d10, d1, d2


def _unit(xp, size=3, index=0):
  e = np.zeros((size,))
  e[index] = 1.0
  return xp.asarray(e)


def _select(xp, orders, options):
  """Per-step choice among {order: (n, ...) array} by the static order array."""
  out = options[1]
  for k, value in options.items():
    if k == 1:
      continue
    mask = (np.asarray(orders) == k).reshape((-1,) + (1,) * (value.ndim - 1))
    out = xp.where(mask, value, out)
  return out


def _dpm_solver_multistep_coefs(g, orders, solver_type):
  """DPM-Solver (noise prediction) multistep, orders 1-3 (Lu et al. 2022b, App. B).

  x_{i+1} = alpha_{i+1}/alpha_i x_i - sigma_{i+1} (e^h - 1) m_i
            [2: - 0.5 sigma_{i+1} (e^h - 1) D1_0  (taylor: - sigma_{i+1} h phi_2(h) D1_0)]
            [3: - sigma_{i+1} h phi_2(h) D1 - sigma_{i+1} h phi_3(h) D2].
  """
  xp, h = g.xp, g.h
  e1 = h * phi(1, h, xp)
  e2 = h * phi(2, h, xp)
  e3 = h * phi(3, h, xp)
  d10, d1, d2 = _differences(g)
  sn = _col(g.sigma_next)
  first = -sn * _col(e1) * _unit(xp)
  if solver_type == "midpoint":
    second = first - 0.5 * sn * _col(e1) * d10
  else:
    second = first - sn * _col(e2) * d10
  third = first - sn * _col(e2) * d1 - sn * _col(e3) * d2
  pm = _select(xp, orders, {1: first, 2: second, 3: third})
  px = g.alpha_next / g.alpha_cur
  return px, pm, xp.zeros_like(px)


def _dpm_solver_pp_coefs(g, orders, solver_type, eta):
  """DPM-Solver++ (data prediction) multistep 1/2M/3M, ODE (eta = 0) or SDE (eta = 1).

  With h_eta = (1 + eta) h (Lu et al. 2022b, eq. 9 / App. D; the 3M-SDE form of
  k-diffusion's sample_dpmpp_3m_sde):
  x_{i+1} = sigma_{i+1}/sigma_i e^{-eta h} x_i + alpha_{i+1} (1 - e^{-h_eta}) m_i
            [2M: + 0.5 alpha_{i+1} (1 - e^{-h_eta}) D1_0  (taylor: + alpha_{i+1} h_eta phi_2(-h_eta) D1_0)]
            [3M: + alpha_{i+1} h_eta phi_2(-h_eta) D1 + alpha_{i+1} h_eta phi_3(-h_eta) D2]
            + sigma_{i+1} sqrt(1 - e^{-2 eta h}) z.
  For eta = 0, 2M is MATH.md's D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1},
  x_{i+1} = sigma_{i+1}/sigma_i x_i - alpha_{i+1} expm1(-h) D.
  """
  xp, h = g.xp, g.h
  he = (1.0 + eta) * h
  f1 = he * phi(1, -he, xp)            # 1 - e^{-h_eta}
  f2 = he * phi(2, -he, xp)
  f3 = he * phi(3, -he, xp)
  d10, d1, d2 = _differences(g)
  an = _col(g.alpha_next)
  first = an * _col(f1) * _unit(xp)
  if solver_type == "midpoint":
    second = first + 0.5 * an * _col(f1) * d10
  else:
    second = first + an * _col(f2) * d10
  third = first + an * _col(f2) * d1 + an * _col(f3) * d2
  pm = _select(xp, orders, {1: first, 2: second, 3: third})
  px = g.sigma_next / g.sigma_cur * xp.exp(-eta * h)
  pz = g.sigma_next * xp.sqrt(-xp.expm1(-2.0 * eta * h))
  return px, pm, pz


def _vandermonde_solve(xp, nodes, rhs):
  """Solves sum_j rho_j nodes_j^i = rhs_i, i = 0..p-1, batched over steps."""
  p = nodes.shape[-1]
  powers = xp.stack([nodes**i for i in range(p)], axis=-2)   # (n, p, p)
  return xp.linalg.solve(powers, rhs[..., None])[..., 0]


def _unipc_coefs(g, orders, variant, use_corrector):
  """UniPC predictor (UniP-p) and corrector (UniC-p) in data prediction (Zhao et al. 2023).

  With hh = -h, B(h) = hh (bh1) or expm1(hh) (bh2), r_k = (lambda_{i-k} - lambda_i)/h,
  D_k = (m_{i-k} - m_i)/r_k, b_k = hh phi_{k+1}(hh) k! / B(h):
    base     = sigma_{i+1}/sigma_i x_i - alpha_{i+1} expm1(hh) m_i
    UniP-p:  x_{i+1} = base - alpha_{i+1} B(h) sum_{k<p} rho_k D_k,
             rho = 0.5 (p = 2) or solve(R_{p-1}, b_{1..p-1}), R_{jk} = r_k^{j}
    UniC-p:  x^c_{i+1} = base - alpha_{i+1} B(h) (sum_{k<p} rho_k D_k + rho_p (m_{i+1} - m_i)),
             rho = 0.5 (p = 1) or solve(R_p, b_{1..p}) with nodes (r_1, .., r_{p-1}, 1),
  m_{i+1} the evaluation at the predicted point (no extra NFE). UniP-2 with bh2 is
  DPM-Solver++(2M). Follows the official code / diffusers' UniPCMultistepScheduler.
  """
  xp, h = g.xp, g.h
  hh = -h
  f1 = hh * phi(1, hh, xp)                              # expm1(-h)
  big_b = hh if variant == "bh1" else f1
  b = [hh * phi(k + 1, hh, xp) * math.factorial(k) / big_b for k in (1, 2, 3)]
  rk1, rk2 = -g.r1, -(g.r1 + g.r2)
  one = xp.ones_like(h)
  zero = xp.zeros_like(h)
  an_b = _col(g.alpha_next * big_b)
  base = -_col(g.alpha_next * f1) * _unit(xp)
  # Predictor: slots [m_i, m_{i-1}, m_{i-2}].
  dk1 = xp.stack([-one / rk1, one / rk1, zero], axis=-1)
  dk2 = xp.stack([-one / rk2, zero, one / rk2], axis=-1)
  p1 = base
  p2 = base - an_b * 0.5 * dk1
  rho3 = _vandermonde_solve(xp, xp.stack([rk1, rk2], -1), xp.stack(b[:2], -1))
  p3 = base - an_b * (_col(rho3[:, 0]) * dk1 + _col(rho3[:, 1]) * dk2)
  pm = _select(xp, orders, {1: p1, 2: p2, 3: p3})
  px = g.sigma_next / g.sigma_cur
  if not use_corrector:
    return px, pm, None
  # Corrector: slots [m_{i+1}, m_i, m_{i-1}, m_{i-2}].
  pad = lambda v: xp.concatenate([xp.zeros_like(v[:, :1]), v], axis=-1)
  cbase, cd1, cd2 = pad(base), pad(dk1), pad(dk2)
  dnew = xp.stack([one, -one, zero, zero], axis=-1)
  c1 = cbase - an_b * 0.5 * dnew
  rho2 = _vandermonde_solve(xp, xp.stack([rk1, one], -1), xp.stack(b[:2], -1))
  c2 = cbase - an_b * (_col(rho2[:, 0]) * cd1 + _col(rho2[:, 1]) * dnew)
  rho3c = _vandermonde_solve(xp, xp.stack([rk1, rk2, one], -1), xp.stack(b, -1))
  c3 = cbase - an_b * (_col(rho3c[:, 0]) * cd1 + _col(rho3c[:, 1]) * cd2
                       + _col(rho3c[:, 2]) * dnew)
  cm = _select(xp, orders, {1: c1, 2: c2, 3: c3})
  return px, pm, cm


def _assemble(grid, n_steps, px, pm, pz, cm, target, corrected_final):
  """Full (N,) coefficient arrays: ODE steps, corrector rows shifted by one, final step.

  Row i holds the corrector that runs after the evaluation at point i (the
  corrector of ODE step i - 1) and the predictor of step i; the last row is the
  final step to clean data when grid.final_step_to_zero.
  """
  xp = samplers_lib.array_module(grid.alpha)
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
      pm_full = xp.where(last_col, _unit(xp), pm_full)
    else:
      px_full = xp.where(last, 1.0 / a_end, px_full)
      pm_full = xp.where(last_col, -_unit(xp) * s_end / a_end, pm_full)
  return _Coefs(*samplers_lib.to_device(keep, cx, cm_full, px_full, pu,
                                        pm_full, pz_full))


def _run_multistep(key, model_fn, x_T, grid, coefs, prediction, target,
                   stochastic):
  """One lax.scan: evaluate, correct, predict (see the module docstring)."""
  x_T = jnp.asarray(x_T, jnp.float32)
  n_steps = coefs.px.shape[0]
  t, alpha, sigma = samplers_lib.to_device(
      grid.t[:n_steps], grid.alpha[:n_steps], grid.sigma[:n_steps])

  def step(carry, inputs):
    x, x_last, hist = carry
    n, t_i, a_i, s_i, c = inputs
    m = samplers_lib.predict(model_fn, x, t_i, a_i, s_i, prediction, target)
    x_c = (c.keep * x + c.cx * x_last + c.cm[0] * m + c.cm[1] * hist[0]
           + c.cm[2] * hist[1] + c.cm[3] * hist[2])
    hist = jnp.stack([m, hist[0], hist[1]])
    x_next = (c.px * x_c + c.pu * x + c.pm[0] * hist[0] + c.pm[1] * hist[1]
              + c.pm[2] * hist[2])
    if stochastic:
      x_next = x_next + c.pz * samplers_lib.per_example_normal(key, n, x)
    return (x_next, x_c, hist), None

  hist0 = jnp.zeros((3,) + x_T.shape, x_T.dtype)
  (x, _, _), _ = jax.lax.scan(
      step, (x_T, x_T, hist0), (jnp.arange(n_steps), t, alpha, sigma, coefs))
  return x


def _n_ode(grid):
  n_points = grid.t.shape[0]
  return n_points - 2 if grid.final_step_to_zero else n_points - 1


def _empty_coefs(grid):
  xp = samplers_lib.array_module(grid.alpha)
  return xp.zeros((0,)), xp.zeros((0, 3)), xp.zeros((0,))


# ----------------------------------------------------------------------------
# Singlestep DPM-Solver-2 / -3.
# ----------------------------------------------------------------------------
def _singlestep(model_fn, x_T, schedule, grid, order, prediction):
  """Singlestep DPM-Solver-k (noise prediction), fixed order k per step (Lu et al. 2022, Alg. 4-5).

  k = 1: x' = alpha'/alpha x - sigma' expm1(h) e_0 (DDIM).
  k = 2 (r = 1/2): u = alpha_s/alpha x - sigma_s expm1(r h) e_0, e_1 = eps(u, s),
     x' = alpha'/alpha x - sigma' expm1(h) e_0 - sigma'/(2r) expm1(h) (e_1 - e_0).
  k = 3 (r1 = 1/3, r2 = 2/3): u1 as above at s1, e_1 = eps(u1, s1),
     u2 = alpha_s2/alpha x - sigma_s2 expm1(r2 h) e_0 - r2/r1 sigma_s2 (expm1(r2 h)/(r2 h) - 1)(e_1 - e_0),
     e_2 = eps(u2, s2), x' = alpha'/alpha x - sigma' expm1(h) e_0 - sigma'/r2 (expm1(h)/h - 1)(e_2 - e_0).
  """
  n_ode = _n_ode(grid)
  x = jnp.asarray(x_T, jnp.float32)
  to_device = samplers_lib.to_device
  if n_ode > 0:
    g = _geometry(grid, n_ode)
    xp, h = g.xp, g.h
    rs = SINGLESTEP_R.get(order, ())
    mids = []
    for r in rs:
      with jax.ensure_compile_time_eval():
        t_mid = schedule.t_from_log_snr(
            jnp.asarray(grid.log_snr[:n_ode] + r * h, jnp.float32))
        a_mid, s_mid = schedule.alpha(t_mid), schedule.sigma(t_mid)
      if xp is np and samplers_lib.is_concrete(t_mid, a_mid, s_mid):
        a_mid, s_mid = np.asarray(a_mid, np.float64), np.asarray(s_mid, np.float64)
      mids.append(to_device(t_mid, a_mid, a_mid / g.alpha_cur, s_mid,
                            r * h * phi(1, r * h, xp), phi(1, r * h, xp) - 1.0))
    inputs = (to_device(grid.t[:n_ode], g.alpha_cur, g.sigma_cur,
                        g.alpha_next / g.alpha_cur, g.sigma_next,
                        h * phi(1, h, xp), h * phi(2, h, xp)), tuple(mids))

    def eps_at(x, t, a, s):
      return samplers_lib.predict(model_fn, x, t, a, s, prediction, "eps")

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
    eps = samplers_lib.predict(model_fn, x, t_i, a_i, s_i, prediction, "eps")
    x = samplers_lib.denoise_final_step(x, eps, a_i, s_i, "eps")
  return x


def _grid(schedule, num_steps, spacing, t_end, rho, final_step_to_zero,
          timesteps=None):
  """samplers.sampling_grid with the default spacing and the default_t_end rule
  (or the explicit evaluation times `timesteps`)."""
  spacing = samplers_lib.default_spacing(schedule) if spacing is None else spacing
  if timesteps is None:
    t_end = samplers_lib.resolve_t_end(schedule, num_steps, t_end, spacing,
                                       final_step_to_zero)
  return samplers_lib.sampling_grid(schedule, num_steps, spacing=spacing,
                                    t_end=t_end, rho=rho,
                                    final_step_to_zero=final_step_to_zero,
                                    timesteps=timesteps)


# ----------------------------------------------------------------------------
# Public samplers.
# ----------------------------------------------------------------------------
def dpm_solver(key, model_fn, x_T, schedule, *, num_steps, prediction="eps",
               order=3, method="multistep", solver_type="midpoint",
               lower_order_final=True, spacing=None, t_end=None,
               final_step_to_zero=True, rho=7.0, timesteps=None):
  """DPM-Solver in noise prediction, orders 1-3, singlestep or multistep (Lu et al. 2022).

  Exponential integrator of the PF-ODE in lambda: x_{i+1} = alpha_{i+1}/alpha_i x_i
  - sigma_{i+1} int_0^h e^u eps du with eps expanded to order k-1 (formulas in
  `_dpm_solver_multistep_coefs` and `_singlestep`). "singlestep" (DPM-Solver-2/3,
  intermediate evaluations at r = 1/2 and r = 1/3, 2/3) costs `order`
  evaluations per step; "multistep" (Lu et al. 2022b) reuses earlier outputs,
  one evaluation per step. Order 1 is DDIM (eta = 0). key is ignored.
  """
  del key
  num_steps = samplers_lib.check_num_steps(num_steps)
  prediction = samplers_lib.check_prediction(prediction)
  order = _check_order(order)
  method = _check_choice("method", method, _METHODS)
  solver_type = _check_choice("solver_type", solver_type, _SOLVER_TYPES)
  grid = _grid(schedule, num_steps, spacing, t_end, rho, final_step_to_zero,
               timesteps)
  if method == "singlestep":
    return _singlestep(model_fn, x_T, schedule, grid, order, prediction)
  n_ode = _n_ode(grid)
  orders = order_schedule(num_steps, order, lower_order_final=lower_order_final,
                          final_step_to_zero=final_step_to_zero)[:n_ode]
  if n_ode > 0:
    g = _geometry(grid, n_ode)
    px, pm, pz = _dpm_solver_multistep_coefs(g, orders, solver_type)
  else:
    px, pm, pz = _empty_coefs(grid)
  coefs = _assemble(grid, num_steps, px, pm, pz, None, "eps", False)
  return _run_multistep(None, model_fn, x_T, grid, coefs, prediction, "eps",
                        stochastic=False)


def dpm_solver_nfe(num_steps, *, order=3, method="multistep",
                   final_step_to_zero=True, **options):
  """NFE of dpm_solver: N (multistep); order (N - 1) + 1 or order N (singlestep)."""
  del options
  n = samplers_lib.check_num_steps(num_steps)
  order = _check_order(order)
  method = _check_choice("method", method, _METHODS)
  if method == "multistep":
    return n
  return order * (n - 1) + 1 if final_step_to_zero else order * n


def dpm_solver_pp(key, model_fn, x_T, schedule, *, num_steps, prediction="eps",
                  order=2, sde=False, solver_type="midpoint",
                  lower_order_final=True, spacing=None, t_end=None,
                  final_step_to_zero=True, rho=7.0, timesteps=None):
  """DPM-Solver++ multistep in data prediction: 2M, 3M, and SDE-DPM-Solver++ (Lu et al. 2022b).

  ODE 2M (MATH.md): r = h_{i-1}/h, D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1},
  x_{i+1} = (sigma_{i+1}/sigma_i) x_i - alpha_{i+1} expm1(-h) D; 3M adds the
  second difference (`_dpm_solver_pp_coefs`). sde=True integrates the
  diffusion SDE instead (eta = 1: x_{i+1} = sigma_{i+1}/sigma_i e^{-h} x_i +
  alpha_{i+1}(1 - e^{-2h}) D + sigma_{i+1} sqrt(1 - e^{-2h}) z, per-example noise
  from key); it samples the data distribution, not the ODE map. order = 1 is
  DDIM in data form. One evaluation per step.
  """
  num_steps = samplers_lib.check_num_steps(num_steps)
  prediction = samplers_lib.check_prediction(prediction)
  order = _check_order(order)
  solver_type = _check_choice("solver_type", solver_type, _SOLVER_TYPES)
  sde = samplers_lib.check_bool("sde", sde)
  grid = _grid(schedule, num_steps, spacing, t_end, rho, final_step_to_zero,
               timesteps)
  n_ode = _n_ode(grid)
  orders = order_schedule(num_steps, order, lower_order_final=lower_order_final,
                          final_step_to_zero=final_step_to_zero)[:n_ode]
  if n_ode > 0:
    g = _geometry(grid, n_ode)
    px, pm, pz = _dpm_solver_pp_coefs(g, orders, solver_type,
                                      1.0 if sde else 0.0)
  else:
    px, pm, pz = _empty_coefs(grid)
  coefs = _assemble(grid, num_steps, px, pm, pz, None, "x0", False)
  return _run_multistep(key, model_fn, x_T, grid, coefs, prediction, "x0",
                        stochastic=sde)


def dpm_solver_pp_nfe(num_steps, *, order=2, **options):
  """NFE of dpm_solver++: one evaluation per step."""
  del options
  _check_order(order)
  return samplers_lib.check_num_steps(num_steps)


def unipc(key, model_fn, x_T, schedule, *, num_steps, prediction="eps", order=3,
          variant="bh2", use_corrector=True, corrected_final=True,
          lower_order_final=True, spacing=None, t_end=None,
          final_step_to_zero=True, rho=7.0, timesteps=None):
  """UniPC: unified predictor-corrector, data prediction (Zhao et al. 2023).

  Predictor UniP-p and corrector UniC-p with B(h) = expm1(-h) ("bh2") or -h
  ("bh1"); formulas in `_unipc_coefs`. The corrector reuses the evaluation at the
  predicted point, so NFE = num_steps; it is skipped after the final step (no
  evaluation there). corrected_final: the final step to clean data applies the
  last correction through x0 = x0_pred(x) + (x_c - x)/alpha_end (the data step
  written in eps form, first order in the correction); otherwise it returns
  x0_pred(x) at the uncorrected point as diffusers does. key is ignored.
  """
  del key
  num_steps = samplers_lib.check_num_steps(num_steps)
  prediction = samplers_lib.check_prediction(prediction)
  order = _check_order(order)
  variant = _check_choice("variant", variant, _UNIPC_VARIANTS)
  use_corrector = samplers_lib.check_bool("use_corrector", use_corrector)
  corrected_final = samplers_lib.check_bool("corrected_final", corrected_final)
  grid = _grid(schedule, num_steps, spacing, t_end, rho, final_step_to_zero,
               timesteps)
  n_ode = _n_ode(grid)
  orders = order_schedule(num_steps, order, lower_order_final=lower_order_final,
                          final_step_to_zero=final_step_to_zero)[:n_ode]
  if n_ode > 0:
    g = _geometry(grid, n_ode)
    px, pm, cm = _unipc_coefs(g, orders, variant, use_corrector)
  else:
    px, pm, _ = _empty_coefs(grid)
    cm = None
  pz = 0.0 * px
  coefs = _assemble(grid, num_steps, px, pm, pz, cm, "x0",
                    corrected_final and use_corrector)
  return _run_multistep(None, model_fn, x_T, grid, coefs, prediction, "x0",
                        stochastic=False)


def unipc_nfe(num_steps, *, order=3, **options):
  """NFE of unipc: one evaluation per step (the corrector reuses it)."""
  del options
  _check_order(order)
  return samplers_lib.check_num_steps(num_steps)
