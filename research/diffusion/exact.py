"""High-accuracy reference solutions of the diffusion probability-flow ODE.

Time convention (schedules.py): continuous t in [0, 1], t = 1 is noise, t = 0 is
clean data, x_t = alpha(t) x0 + sigma(t) eps.

The PF-ODE (Song et al. 2021) of any such schedule, written in the VE variables
of Karras et al. 2022 / DPM-Solver (Lu et al. 2022, eq. 3.4),

    y = x / alpha(t),   s = sigma(t) / alpha(t) = exp(-lambda(t)),   dy/ds = eps(alpha y, t(s)),

is integrated here in s with an adaptive high-order Runge-Kutta method (diffrax
Dopri8 by default, rtol = atol = 1e-10) from s(1) down to s(t_end); s = 0 (clean
data, the default t_end = 0) is a regular point, so the exact map to the data
is obtained without a final-step approximation. Use float64
(`jax.enable_x64(True)` (the context manager)) for 1e-10 accuracy: the solver works in the
dtype of x_T. The map depends on the schedule only through s(1) and s(t_end).

`mixture_eps` is the analytic E[eps | x_t] of an isotropic Gaussian mixture in
the dtype of its inputs (research.data.gmm.eps computes in float32), the model
of the accuracy tests and benchmarks.
"""
from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["pf_ode_exact", "mixture_eps", "mixture_model_fn"]


def mixture_eps(mix, x, alpha, sigma):
  """E[eps | x_t = x] of an isotropic Gaussian mixture, in the dtype of x.

  E[eps | x_t] = sigma sum_k r_k(x) (x - alpha mu_k) / v_k, v_k = alpha^2 s_k^2 +
  sigma^2, r_k the posterior responsibilities (stable softmax). Same formula as
  research.data.gmm.eps without its float32 cast. alpha, sigma: scalars or
  per-example arrays broadcastable to x.shape[:-1].
  """
  x = jnp.asarray(x)
  dtype = x.dtype
  w = jnp.asarray(mix.weights, dtype)
  mu = jnp.asarray(mix.means, dtype)
  std = jnp.asarray(mix.stds, dtype)
  batch = x.shape[:-1]
  a = jnp.broadcast_to(jnp.asarray(alpha, dtype), batch)[..., None]      # (..., 1)
  s = jnp.broadcast_to(jnp.asarray(sigma, dtype), batch)[..., None]
  var = a**2 * std**2 + s**2                                            # (..., K)
  diff = x[..., None, :] - a[..., None] * mu                            # (..., K, d)
  d = mu.shape[-1]
  log_joint = (jnp.log(w) - 0.5 * jnp.sum(diff**2, -1) / var
               - 0.5 * d * jnp.log(var))
  r = jax.nn.softmax(log_joint, axis=-1)
  return s * jnp.sum((r / var)[..., None] * diff, axis=-2)


def mixture_model_fn(mix, schedule, prediction="eps"):
  """model_fn(x, t) of the exact mixture model for the samplers (t of shape (batch,)).

  prediction "eps" returns E[eps | x_t]; "x0", "v", "score" are converted with
  research.diffusion.parameterization (exact for the exact model).
  """
  from research.diffusion import parameterization

  def model_fn(x, t):
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    eps = mixture_eps(mix, x, alpha, sigma)
    if prediction == "eps":
      return eps
    return parameterization.convert(eps, x, alpha, sigma, source="eps",
                                    target=prediction)

  return model_fn


def pf_ode_exact(model_fn_eps, x_T, schedule, t_end=0.0, *, rtol=1e-10,
                 atol=1e-10, solver=None, max_steps=100_000):
  """The PF-ODE map x_T (at t = 1) -> x(t_end), to solver tolerance.

  Integrates dy/ds = eps(alpha(t) y, t), t = schedule.t_from_edm_sigma(s), from
  s(1) to s(t_end) (VE form, see the module docstring) with `solver` (default
  diffrax.Dopri8) and a PID step-size controller, then returns x = alpha(t_end) y.

  Args:
    model_fn_eps: eps-prediction model eps(x, t), t of shape (batch,).
    x_T: (batch, ...) start points at t = 1 (in the schedule's scale).
    schedule: a schedules.Schedule.
    t_end: end time in [0, 1) (0 = clean data), or a 1-D sequence of strictly
      decreasing end times (one solve, dense output at each).
    rtol, atol: diffrax tolerances (RMS norm over the whole batch).
    solver: a diffrax solver (default Dopri8).
    max_steps: diffrax step limit.

  Returns:
    x(t_end) with x_T's shape and dtype, or a stack (len(t_end), *x_T.shape)
    for a sequence of end times.
  """
  t_ends = np.atleast_1d(np.asarray(t_end, np.float64))
  if t_ends.ndim != 1 or not np.all((t_ends >= 0.0) & (t_ends < 1.0)) \
      or np.any(np.diff(t_ends) >= 0):
    raise ValueError(
        f"t_end must be in [0, 1), or a strictly decreasing 1-D sequence of"
        f" such times, got t_end={t_end!r}")
  x_T = jnp.asarray(x_T)
  if not jnp.issubdtype(x_T.dtype, jnp.floating):
    x_T = x_T.astype(jnp.float32)
  dtype = x_T.dtype
  t_one = jnp.asarray(1.0, dtype)
  t_fin = jnp.asarray(t_ends, dtype)
  s_start = schedule.edm_sigma(t_one).astype(dtype)
  s_stops = schedule.edm_sigma(t_fin).astype(dtype)
  batch = x_T.shape[0]

  def vector_field(s, y, args):
    del args
    t = schedule.t_from_edm_sigma(s).astype(dtype)
    alpha = schedule.alpha(t).astype(dtype)
    return model_fn_eps(alpha * y, jnp.full((batch,), t, dtype)).astype(dtype)

  y_T = x_T / schedule.alpha(t_one).astype(dtype)
  sol = diffrax.diffeqsolve(
      diffrax.ODETerm(vector_field),
      diffrax.Dopri8() if solver is None else solver,
      t0=s_start, t1=s_stops[-1], dt0=None, y0=y_T,
      stepsize_controller=diffrax.PIDController(
          rtol=rtol, atol=atol, jump_ts=s_stops[:-1] if len(t_ends) > 1 else None),
      saveat=diffrax.SaveAt(ts=s_stops), max_steps=max_steps)
  alpha_end = schedule.alpha(t_fin).astype(dtype)
  x_end = alpha_end.reshape((-1,) + (1,) * x_T.ndim) * sol.ys
  x_end = x_end.astype(dtype)
  return x_end if np.ndim(t_end) else x_end[0]
