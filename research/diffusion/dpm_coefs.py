"""Coefficient formulas of the exponential-integrator samplers: DPM-Solver, DPM-Solver++, UniPC.

Time convention (schedules.py): continuous t in [0, 1], t = 1 is noise,
x_t = alpha(t) x0 + sigma(t) eps, lambda(t) = log(alpha/sigma) increases as t
decreases. On a step from lambda_i to lambda_{i+1} the step size is
h = lambda_{i+1} - lambda_i > 0 and the linear part of the probability-flow ODE
is integrated exactly,

    noise form (DPM-Solver, Lu et al. 2022):
      x_{i+1} = alpha_{i+1}/alpha_i x_i - sigma_{i+1} int_0^h e^u eps(lambda_i + u) du,
    data form (DPM-Solver++, Lu et al. 2022b; UniPC, Zhao et al. 2023):
      x_{i+1} = sigma_{i+1}/sigma_i x_i + alpha_{i+1} int_0^h e^{u - h} x0(lambda_i + u) du,

with the model output expanded in lambda (Taylor / multistep differences). The
integrals are phi-functions phi_k(z) = sum_j z^j/(j + k)! (phi_1(z) = expm1(z)/z,
phi_{k+1} = (phi_k - 1/k!)/z), evaluated without cancellation (a series for
|z| < 1, the expm1 recursion above), so h -> 0 is safe in float32.

Each `*_coefs` function maps the lambda grid of the ODE steps (`geometry`) and
the static per-step orders to the predictor coefficients (px, pm, pz) of the
linear multistep engine (dpm_engine.py): x_{i+1} = px x_i + sum_j pm[j] m_{i-j}
+ pz z, and for UniPC also the corrector coefficients cm. The arrays are numpy
float64 for a concrete grid, jax.numpy otherwise (`xp`).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from research.diffusion import grid as grid_lib

__all__ = ["phi", "Geometry", "geometry", "differences", "unit", "select",
           "dpm_solver_multistep_coefs", "dpm_solver_pp_coefs", "unipc_coefs"]


# ----------------------------------------------------------------------------
# phi-functions.
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



class Geometry(NamedTuple):
  """lambda-grid quantities of the ODE steps i = 0..n-1 (from point i to i + 1)."""
  h: jax.Array            # lambda_{i+1} - lambda_i
  r1: jax.Array           # (lambda_i - lambda_{i-1}) / h      (DPM-Solver's r0)
  r2: jax.Array           # (lambda_{i-1} - lambda_{i-2}) / h  (DPM-Solver's r1)
  alpha_cur: jax.Array
  sigma_cur: jax.Array
  alpha_next: jax.Array
  sigma_next: jax.Array
  xp: object              # numpy (concrete grid, float64) or jax.numpy


def geometry(grid, n_ode):
  xp = grid_lib.array_module(grid.log_snr)
  lam = grid.log_snr[:n_ode + 1]
  h = lam[1:] - lam[:-1]
  # Placeholders before the first step (those coefficients are never selected):
  # pretend the earlier steps had the same size, which keeps everything finite.
  lam_p1 = xp.concatenate([lam[:1] - h[:1], lam[:n_ode - 1]])
  lam_p2 = xp.concatenate([lam_p1[:1] - h[:1], lam_p1[:n_ode - 1]])
  return Geometry(
      h=h,
      r1=(lam[:-1] - lam_p1) / h,
      r2=(lam_p1 - lam_p2) / h,
      alpha_cur=grid.alpha[:n_ode], sigma_cur=grid.sigma[:n_ode],
      alpha_next=grid.alpha[1:n_ode + 1], sigma_next=grid.sigma[1:n_ode + 1],
      xp=xp)


def col(v):
  return v[:, None]


def differences(g):
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
  s = col(g.r1 + g.r2)
  d1 = d10 + col(g.r1) / s * (d10 - d11)
  d2 = (d10 - d11) / s
  return d10, d1, d2


def unit(xp, size=3, index=0):
  e = np.zeros((size,))
  e[index] = 1.0
  return xp.asarray(e)


def select(xp, orders, options):
  """Per-step choice among {order: (n, ...) array} by the static order array."""
  out = options[1]
  for k, value in options.items():
    if k == 1:
      continue
    mask = (np.asarray(orders) == k).reshape((-1,) + (1,) * (value.ndim - 1))
    out = xp.where(mask, value, out)
  return out


def dpm_solver_multistep_coefs(g, orders, solver_type):
  """DPM-Solver (noise prediction) multistep, orders 1-3 (Lu et al. 2022b, App. B).

  x_{i+1} = alpha_{i+1}/alpha_i x_i - sigma_{i+1} (e^h - 1) m_i
            [2: - 0.5 sigma_{i+1} (e^h - 1) D1_0  (taylor: - sigma_{i+1} h phi_2(h) D1_0)]
            [3: - sigma_{i+1} h phi_2(h) D1 - sigma_{i+1} h phi_3(h) D2].
  """
  xp, h = g.xp, g.h
  e1 = h * phi(1, h, xp)
  e2 = h * phi(2, h, xp)
  e3 = h * phi(3, h, xp)
  d10, d1, d2 = differences(g)
  sn = col(g.sigma_next)
  first = -sn * col(e1) * unit(xp)
  if solver_type == "midpoint":
    second = first - 0.5 * sn * col(e1) * d10
  else:
    second = first - sn * col(e2) * d10
  third = first - sn * col(e2) * d1 - sn * col(e3) * d2
  pm = select(xp, orders, {1: first, 2: second, 3: third})
  px = g.alpha_next / g.alpha_cur
  return px, pm, xp.zeros_like(px)


def dpm_solver_pp_coefs(g, orders, solver_type, eta):
  """DPM-Solver++ (data prediction) multistep 1/2M/3M, ODE (eta = 0) or SDE (eta = 1).

  With h_eta = (1 + eta) h (Lu et al. 2022b, eq. 9 / App. D; the 3M-SDE form of
  k-diffusion's sample_dpmpp_3m_sde):
  x_{i+1} = sigma_{i+1}/sigma_i e^{-eta h} x_i + alpha_{i+1} (1 - e^{-h_eta}) m_i
            [2M: + 0.5 alpha_{i+1} (1 - e^{-h_eta}) D1_0  (taylor: + alpha_{i+1} h_eta phi_2(-h_eta) D1_0)]
            [3M: + alpha_{i+1} h_eta phi_2(-h_eta) D1 + alpha_{i+1} h_eta phi_3(-h_eta) D2]
            + sigma_{i+1} sqrt(1 - e^{-2 eta h}) z.
  For eta = 0, 2M is (docs/math.md) D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1},
  x_{i+1} = sigma_{i+1}/sigma_i x_i - alpha_{i+1} expm1(-h) D.
  """
  xp, h = g.xp, g.h
  he = (1.0 + eta) * h
  f1 = he * phi(1, -he, xp)            # 1 - e^{-h_eta}
  f2 = he * phi(2, -he, xp)
  f3 = he * phi(3, -he, xp)
  d10, d1, d2 = differences(g)
  an = col(g.alpha_next)
  first = an * col(f1) * unit(xp)
  if solver_type == "midpoint":
    second = first + 0.5 * an * col(f1) * d10
  else:
    second = first + an * col(f2) * d10
  third = first + an * col(f2) * d1 + an * col(f3) * d2
  pm = select(xp, orders, {1: first, 2: second, 3: third})
  px = g.sigma_next / g.sigma_cur * xp.exp(-eta * h)
  pz = g.sigma_next * xp.sqrt(-xp.expm1(-2.0 * eta * h))
  return px, pm, pz


def vandermonde_solve(xp, nodes, rhs):
  """Solves sum_j rho_j nodes_j^i = rhs_i, i = 0..p-1, batched over steps."""
  p = nodes.shape[-1]
  powers = xp.stack([nodes**i for i in range(p)], axis=-2)   # (n, p, p)
  return xp.linalg.solve(powers, rhs[..., None])[..., 0]


def unipc_coefs(g, orders, variant, use_corrector):
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
  an_b = col(g.alpha_next * big_b)
  base = -col(g.alpha_next * f1) * unit(xp)
  # Predictor: slots [m_i, m_{i-1}, m_{i-2}].
  dk1 = xp.stack([-one / rk1, one / rk1, zero], axis=-1)
  dk2 = xp.stack([-one / rk2, zero, one / rk2], axis=-1)
  p1 = base
  p2 = base - an_b * 0.5 * dk1
  rho3 = vandermonde_solve(xp, xp.stack([rk1, rk2], -1), xp.stack(b[:2], -1))
  p3 = base - an_b * (col(rho3[:, 0]) * dk1 + col(rho3[:, 1]) * dk2)
  pm = select(xp, orders, {1: p1, 2: p2, 3: p3})
  px = g.sigma_next / g.sigma_cur
  if not use_corrector:
    return px, pm, None
  # Corrector: slots [m_{i+1}, m_i, m_{i-1}, m_{i-2}].
  pad = lambda v: xp.concatenate([xp.zeros_like(v[:, :1]), v], axis=-1)
  cbase, cd1, cd2 = pad(base), pad(dk1), pad(dk2)
  dnew = xp.stack([one, -one, zero, zero], axis=-1)
  c1 = cbase - an_b * 0.5 * dnew
  rho2 = vandermonde_solve(xp, xp.stack([rk1, one], -1), xp.stack(b[:2], -1))
  c2 = cbase - an_b * (col(rho2[:, 0]) * cd1 + col(rho2[:, 1]) * dnew)
  rho3c = vandermonde_solve(xp, xp.stack([rk1, rk2, one], -1), xp.stack(b, -1))
  c3 = cbase - an_b * (col(rho3c[:, 0]) * cd1 + col(rho3c[:, 1]) * cd2
                       + col(rho3c[:, 2]) * dnew)
  cm = select(xp, orders, {1: c1, 2: c2, 3: c3})
  return px, pm, cm
