"""Log-likelihood of a flow-matching model through its ODE (a continuous normalizing flow).

Time convention (flow matching, as research/flow/ode.py): t = 0 is noise, x_0 ~ N(0, I),
and t = 1 is data; the learned ODE dx/dt = v(x, t) carries noise to data. Along a
solution the log-density obeys the instantaneous change of variables (Chen et al. 2018,
"Neural ordinary differential equations", Theorem 1):

    d log p_t(x_t)/dt = -div v(x_t, t),   so
    log p_1(x) = log N(x_0; 0, I) - int_0^1 div v(x_t, t) dt,

where x_t is the solution through x_1 = x, integrated backwards from t = 1 to t = 0
together with the running integral (Grathwohl et al. 2019, FFJORD; Lipman et al. 2023,
Sec. C) by an adaptive Runge-Kutta solver (diffrax Tsit5 or Dopri5).

The engine, `ode_log_likelihood`, takes any drift f(x, t) and any prior and computes

    log p(x) = log p_end(x(t_end)) + int_{t_start}^{t_end} div f(x_t, t) dt

from x(t_start) = x; research/diffusion/likelihood.py calls it with the probability-flow
drift of a diffusion model (t_start = t_eps, t_end = 1). The divergence is exact (the
trace of the Jacobian from D Jacobian-vector products: small D only) or Hutchinson's
estimate eps^T (df/dx) eps with probes fixed along each trajectory (Hutchinson 1989;
Grathwohl et al. 2019), Rademacher or Gaussian, averaged over num_probes: an unbiased
estimate of log p(x). At one time one probe has variance sum_{i != j} (J_ij^2 + J_ij J_ji)
(Rademacher: the diagonal of J adds nothing) or sum_{i, j} (J_ij^2 + J_ij J_ji) (Gaussian);
a probe fixed along the trajectory adds these errors up coherently over t, and
num_probes probes divide the variance by num_probes.
"""
from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["log_likelihood", "ode_log_likelihood", "SOLVERS", "PROBES", "EVALS_PER_STEP"]

SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5}
PROBES = ("rademacher", "gaussian")
# Both FSAL solvers spend 6 new evaluations per attempted step.
EVALS_PER_STEP = 6


def _probes(key, x, num_probes, probe):
  """(B, K, ...) probes; example i uses fold_in(key, i) (independent of the batch size)."""

  def one(i):
    k = jax.random.fold_in(key, i)
    shape = (num_probes,) + x.shape[1:]
    if probe == "rademacher":
      return jax.random.rademacher(k, shape, x.dtype)
    return jax.random.normal(k, shape, x.dtype)

  return jax.vmap(one)(jnp.arange(x.shape[0]))


def _check_options(*, solver, probe, num_probes, rtol, atol, max_steps):
  if solver not in SOLVERS:
    raise ValueError(f"unknown solver={solver!r}; valid solvers: {list(SOLVERS)}")
  if probe not in PROBES:
    raise ValueError(f"unknown probe={probe!r}; valid probes: {list(PROBES)}")
  if isinstance(num_probes, bool) or not isinstance(num_probes, (int, np.integer)) \
      or num_probes < 1:
    raise ValueError(f"num_probes must be a Python int >= 1, got num_probes={num_probes!r}")
  for name, value in (("rtol", rtol), ("atol", atol)):
    if not float(value) > 0:
      raise ValueError(f"{name} must be > 0, got {name}={value!r}")
  if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
    raise ValueError(f"max_steps must be a Python int >= 1, got max_steps={max_steps!r}")


def _as_batch(x, name):
  x = jnp.asarray(x)
  if x.ndim < 1 or not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name} must be a float array of shape (batch, ...), got shape "
                     f"{x.shape} and dtype {x.dtype}")
  return x.astype(jnp.float32)


def ode_log_likelihood(key, drift, x, *, t_start, t_end, prior_log_prob, hutchinson=True,
                       num_probes=1, probe="rademacher", rtol=1e-5, atol=1e-5,
                       solver="tsit5", max_steps=4096):
  """log p(x) = prior_log_prob(x(t_end)) + int_{t_start}^{t_end} div f dt, per example.

  The instantaneous change of variables (module docstring) for dx/dt = drift(x, t),
  integrated from x(t_start) = x to t_end (either direction) per example (vmap: each
  example has its own adaptive steps, so the result does not depend on the batch) with
  a PID controller (rtol, atol) on the state (x, running integral).

  Args:
    key: PRNG key of the Hutchinson probes (unused when hutchinson=False); example i's
      probes come from fold_in(key, i) and stay fixed along its trajectory.
    drift: drift(x, t) -> dx/dt, x of shape (1, ...) (one example with a batch axis),
      t a float32 scalar.
    x: float array (B, ...), the states at t_start.
    t_start, t_end: Python floats or scalars, t_start != t_end.
    prior_log_prob: x_end (1, ...) -> scalar log-density at t_end.
    hutchinson: True: eps^T J eps averaged over num_probes probes (unbiased);
      False: the exact trace with D = prod(x.shape[1:]) Jacobian-vector products.
    num_probes, probe ("rademacher" | "gaussian"): Hutchinson only.
    rtol, atol, solver ("tsit5" | "dopri5"), max_steps: diffrax's settings (exceeding
      max_steps raises at run time).

  Returns:
    (log_p, nfe): float32 (B,) log-densities in nats, and int32 (B,) evaluations of the
    augmented vector field per example, exactly 1 + 6 (accepted + rejected steps); each
    is one drift evaluation plus num_probes (Hutchinson) or D (exact) Jacobian-vector
    products.
  """
  _check_options(solver=solver, probe=probe, num_probes=num_probes, rtol=rtol, atol=atol,
                 max_steps=max_steps)
  x = _as_batch(x, "x")
  dims = int(np.prod(x.shape[1:]))
  probes = _probes(key, x, num_probes, probe) if hutchinson else None
  basis = jnp.eye(dims, dtype=jnp.float32).reshape((dims, 1) + x.shape[1:])

  def augmented(t, state, probes_i):
    y, _ = state                                             # y: (1, ...)
    f, jvp_fn = jax.linearize(lambda z: drift(z, t), y)
    if hutchinson:
      jv = jax.vmap(jvp_fn)(probes_i[:, None])              # (K, 1, ...)
      div = jnp.mean(jnp.sum((probes_i[:, None] * jv).reshape(num_probes, -1), axis=1))
    else:
      jv = jax.vmap(jvp_fn)(basis)                           # (D, 1, ...)
      div = jnp.trace(jv.reshape(dims, dims))
    return f, div

  term = diffrax.ODETerm(augmented)
  t0, t1 = jnp.float32(t_start), jnp.float32(t_end)
  dt0 = (t1 - t0) / 100

  def solve_one(x_i, probes_i):
    state0 = (x_i[None], jnp.zeros((), jnp.float32))
    f0 = augmented(t0, state0, probes_i)                     # FSAL state: counted below
    sol = diffrax.diffeqsolve(
        term, SOLVERS[solver](), t0, t1, dt0, state0, args=probes_i,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps, solver_state=(jnp.array(False), f0),
        saveat=diffrax.SaveAt(t1=True))
    x_end, integral = sol.ys[0][-1], sol.ys[1][-1]
    num_steps = jnp.asarray(sol.stats["num_steps"], jnp.int32)
    return prior_log_prob(x_end) + integral, 1 + EVALS_PER_STEP * num_steps

  if hutchinson:
    return jax.vmap(solve_one)(x, probes)
  return jax.vmap(lambda x_i: solve_one(x_i, None))(x)


def _standard_normal_log_prob(x):
  return jnp.sum(jax.scipy.stats.norm.logpdf(x))


def log_likelihood(key, velocity_fn, x1, *, hutchinson=True, num_probes=1, probe="rademacher",
                   rtol=1e-5, atol=1e-5, solver="tsit5", max_steps=4096, t_data=1.0):
  """log p_1(x1) per example of the flow dx/dt = v(x, t) from N(0, I) at t = 0 to data at 1.

  log p_1(x1) = log N(x_0; 0, I) - int_0^1 div v(x_t, t) dt, the ODE solved backwards
  from x(t_data) = x1 to t = 0 (module docstring; Chen et al. 2018; Grathwohl et al.
  2019). Flow-matching time convention: t = 0 noise, t = 1 data.

  Args:
    key: PRNG key of the Hutchinson probes (example i: fold_in(key, i)).
    velocity_fn: v(x, t) -> dx/dt, research/flow/ode.py's contract (x (1, ...) here,
      t a float32 scalar).
    x1: data, float array (B, ...).
    hutchinson, num_probes, probe, rtol, atol, solver, max_steps: as ode_log_likelihood.
    t_data: the time of the data end, in (0, 1] (default 1; a path whose velocity is
      singular at t = 1 can stop short of it and then gives log p_{t_data}).

  Returns:
    (log_p, nfe): float32 (B,) log-densities in nats of x1 in the scale given, int32 (B,)
    evaluations of the augmented field (1 + 6 (accepted + rejected steps)).
  """
  if not 0.0 < float(t_data) <= 1.0:
    raise ValueError(f"t_data must lie in (0, 1], got t_data={t_data!r}")
  return ode_log_likelihood(
      key, velocity_fn, _as_batch(x1, "x1"), t_start=float(t_data), t_end=0.0,
      prior_log_prob=_standard_normal_log_prob, hutchinson=hutchinson, num_probes=num_probes,
      probe=probe, rtol=rtol, atol=atol, solver=solver, max_steps=max_steps)
