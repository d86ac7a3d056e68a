"""ODE samplers for flow models: fixed-step Euler / midpoint / Heun / RK4 and adaptive Dopri5.

Time convention (flow matching): t = 0 is noise, t = 1 is data. The samplers
integrate dx/dt = v(x, t) from t0 (default 0, noise) to t1 (default 1, data);
t1 < t0 integrates backwards (data -> noise) with the same code.

Velocity contract: velocity_fn(x, t) -> dx/dt of x's shape, where x is the
whole state (e.g. a batch (B, ...)) and t is a SCALAR array (shape ()) of x's
dtype. A network that wants one time per example broadcasts it itself,
jnp.broadcast_to(t, x.shape[:1]) (research.nets.mlp.VelocityMLP already does).

Fixed-step methods on the uniform grid t_n = t0 + (t1 - t0) n / N, h = (t1 - t0) / N
(Hairer, Norsett & Wanner, "Solving ODEs I"; used for flows by Lipman et al.
2023 and Liu et al. 2023):

    euler     x' = x + h f(x, t)                                   order 1, NFE N
    midpoint  x' = x + h f(x + h/2 f(x, t), t + h/2)               order 2, NFE 2N
    heun      k1 = f(x, t), k2 = f(x + h k1, t + h),
              x' = x + h/2 (k1 + k2)                               order 2, NFE 2N
    rk4       classical Runge-Kutta, k1..k4, x' = x + h/6 (k1 + 2k2 + 2k3 + k4)
                                                                   order 4, NFE 4N

Each is one `lax.scan` over N steps, so compile time does not grow with N.
num_steps is a static Python int (changing it retraces).

Adaptive: Dormand-Prince 5(4) (Dormand & Prince 1980) through diffrax with a
PID step-size controller; the error norm is diffrax's RMS over the whole state,
so a batch shares one step-size sequence (as in torchdiffeq-based CFM code,
Tong et al. 2023). NFE accounting is exact; see `solve_adaptive`.

Registry (research/registry.py, kind "solver"): REGISTRY, NAMES, get(name),
spec(name); every solver follows solver(velocity_fn, x0, **options) -> (x1, nfe).
A fixed-step method is registered with `fixed_step_method(name, evals_per_step)`
on its step function.
"""
from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp

from research import registry

__all__ = [
    "euler_step",
    "midpoint_step",
    "heun_step",
    "rk4_step",
    "FIXED_STEP_METHODS",
    "SOLVERS",
    "nfe",
    "solve",
    "solve_adaptive",
    "get_solver",
    "REGISTRY",
    "NAMES",
    "get",
    "spec",
    "fixed_step_method",
]

REGISTRY = registry.Registry("solver")
_T_OPTIONS = (registry.real("t0", 0.0, doc="start time (0: noise)"),
              registry.real("t1", 1.0, doc="end time (1: data)"))


def fixed_step_method(name, evals_per_step):
  """Decorator: registers the step function step(velocity_fn, x, t, h) -> x_next as the
  fixed-step solver `name`, solver(velocity_fn, x0, *, num_steps, t0, t1) -> (x1, nfe),
  NFE = evals_per_step * num_steps. Returns the step function."""

  def decorate(step):
    def solver(velocity_fn, x0, *, num_steps, t0=0.0, t1=1.0):
      x1 = solve(velocity_fn, x0, num_steps=num_steps, method=name, t0=t0, t1=t1)
      return x1, jnp.asarray(nfe(name, num_steps), jnp.int32)

    solver.step = step
    solver.__doc__ = f"{name} solve (see `solve`): returns (x1, nfe)."
    REGISTRY.register(name, nfe=lambda num_steps, **_: evals_per_step * num_steps,
                      options=_T_OPTIONS)(solver)
    return step

  return decorate


def __getattr__(attr):
  # The name lists follow run-time registrations.
  if attr == "NAMES" or attr == "SOLVERS":
    return REGISTRY.names()
  if attr == "FIXED_STEP_METHODS":
    return tuple(n for n in REGISTRY.names() if REGISTRY.spec(n).takes_num_steps)
  raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def get(name):
  """The solver `name`; ValueError listing every valid name."""
  return REGISTRY.get(name)


def spec(name):
  """The registry entry (SamplerSpec) of solver `name`."""
  return REGISTRY.spec(name)


# ----------------------------------------------------------------------------
# One step of each fixed-step method: (velocity_fn, x, t, h) -> x_next.
# ----------------------------------------------------------------------------
@fixed_step_method("euler", 1)
def euler_step(velocity_fn, x, t, h):
  """Explicit Euler step: x' = x + h f(x, t). Order 1, 1 NFE (Euler 1768)."""
  return x + h * velocity_fn(x, t)


@fixed_step_method("midpoint", 2)
def midpoint_step(velocity_fn, x, t, h):
  """Explicit midpoint step: x' = x + h f(x + h/2 f(x, t), t + h/2). Order 2, 2 NFE (Runge 1895)."""
  x_mid = x + (h / 2) * velocity_fn(x, t)
  return x + h * velocity_fn(x_mid, t + h / 2)


@fixed_step_method("heun", 2)
def heun_step(velocity_fn, x, t, h):
  """Heun (explicit trapezoid) step: x' = x + h/2 (f(x, t) + f(x + h f(x, t), t + h)). Order 2, 2 NFE.

  Heun 1900; the corrector used by Karras et al. 2022 and for flows by
  Liu et al. 2023.
  """
  k1 = velocity_fn(x, t)
  k2 = velocity_fn(x + h * k1, t + h)
  return x + (h / 2) * (k1 + k2)


@fixed_step_method("rk4", 4)
def rk4_step(velocity_fn, x, t, h):
  """Classical Runge-Kutta step: x' = x + h/6 (k1 + 2 k2 + 2 k3 + k4). Order 4, 4 NFE (Kutta 1901).

  k1 = f(x, t), k2 = f(x + h/2 k1, t + h/2), k3 = f(x + h/2 k2, t + h/2),
  k4 = f(x + h k3, t + h).
  """
  k1 = velocity_fn(x, t)
  k2 = velocity_fn(x + (h / 2) * k1, t + h / 2)
  k3 = velocity_fn(x + (h / 2) * k2, t + h / 2)
  k4 = velocity_fn(x + h * k3, t + h)
  return x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)


# Dopri5 has 7 stages; the 7th is f(x_{n+1}, t_{n+1}), reused as the 1st stage
# of the next step (FSAL), so every attempted step costs 6 new evaluations.
_DOPRI5_EVALS_PER_STEP = 6


def _fixed_spec(method):
  if method not in REGISTRY or not REGISTRY.spec(method).takes_num_steps:
    fixed = [n for n in REGISTRY.names() if REGISTRY.spec(n).takes_num_steps]
    raise ValueError(f"unknown method {method!r}; valid methods: {fixed}")
  return REGISTRY.spec(method)


def _state_and_times(x0, t0, t1):
  """x0 as a float array and t0, t1 as scalars of its dtype; ValueError naming x0."""
  x0 = jnp.asarray(x0)
  if not jnp.issubdtype(x0.dtype, jnp.floating):
    raise ValueError(f"x0 must be a float array, got dtype {x0.dtype}")
  return x0, jnp.asarray(t0, x0.dtype), jnp.asarray(t1, x0.dtype)


def _check_num_steps(num_steps):
  registry.check_int("num_steps", num_steps, minimum=1)


def nfe(method, num_steps):
  """Number of velocity evaluations of a fixed-step solve: N x evals per step.

  euler N, midpoint 2N, heun 2N, rk4 4N. Raises ValueError for "dopri5"
  (adaptive: its NFE is returned by `solve_adaptive`) or an unknown method.
  """
  if method == "dopri5":
    raise ValueError(
        "method='dopri5' is adaptive: its NFE is known only after the solve "
        "and is returned by solve_adaptive")
  spec_ = _fixed_spec(method)
  _check_num_steps(num_steps)
  return spec_.count_nfe(num_steps)


def solve(velocity_fn, x0, *, num_steps, method="euler", t0=0.0, t1=1.0,
          return_trajectory=False):
  """Integrate dx/dt = velocity_fn(x, t) from t0 to t1 with N fixed steps.

  Uniform grid t_n = t0 + (t1 - t0) n / N; one `lax.scan` over the steps of
  `method` ("euler", "midpoint", "heun", "rk4"; formulas in the module
  docstring). Flow sampling (Lipman et al. 2023; Liu et al. 2023): x0 ~ N(0, I)
  at t0 = 0 to data at t1 = 1. velocity_fn receives a scalar t.

  Returns x(t1) with x0's shape, or with return_trajectory=True the states at
  all N + 1 grid times, shape (N + 1,) + x0.shape (first x0, last x(t1)).
  NFE = nfe(method, num_steps). Raises ValueError for an unknown method or
  num_steps not an int >= 1.
  """
  step = _fixed_spec(method).fn.step
  _check_num_steps(num_steps)
  x0, t0, t1 = _state_and_times(x0, t0, t1)
  dtype = x0.dtype
  span = t1 - t0

  def body(x, n):
    # Grid points from n directly (no accumulated rounding); h per step so the
    # last step lands exactly on t1.
    t_n = t0 + span * (n / num_steps)
    t_next = t0 + span * ((n + 1) / num_steps)
    x_next = step(velocity_fn, x, t_n, t_next - t_n)
    return x_next, (x_next if return_trajectory else None)

  steps = jnp.arange(num_steps, dtype=dtype)
  x1, path = jax.lax.scan(body, x0, steps)
  if return_trajectory:
    return jnp.concatenate([x0[None], path], axis=0)
  return x1


_ADAPTIVE_OPTIONS = (
    registry.real("rtol", 1e-5, low=0.0, low_open=True, doc="relative tolerance"),
    registry.real("atol", 1e-5, low=0.0, low_open=True, doc="absolute tolerance"),
    registry.integer("max_steps", 4096, minimum=1, doc="most attempted steps"),
    registry.real("dt0", None, doc="first step (None: (t1 - t0) / 100)")) + _T_OPTIONS


@REGISTRY.register("dopri5", nfe=lambda num_steps=None, **_: None, options=_ADAPTIVE_OPTIONS,
                   takes_num_steps=False)
def solve_adaptive(velocity_fn, x0, *, rtol=1e-5, atol=1e-5, t0=0.0, t1=1.0,
                   max_steps=4096, dt0=None):
  """Integrate dx/dt = velocity_fn(x, t) from t0 to t1 with adaptive Dopri5; return (x1, nfe).

  Dormand-Prince 5(4) (Dormand & Prince 1980) with a PID step-size controller
  (diffrax.Dopri5, diffrax.PIDController(rtol, atol)), as used to sample CFM
  models (Tong et al. 2023) and FFJORD-style flows. The error norm is the RMS
  over all entries of x, so a batch shares its steps. velocity_fn receives a
  scalar t.

  NFE counting (exact, checked by a test that counts calls with a callback):
  nfe = 1 + 6 * sol.stats["num_steps"], where num_steps counts accepted AND
  rejected steps. The 1 is f(x0, t0), evaluated here and handed to diffrax as
  the FSAL solver state; each attempted step then evaluates stages 2..7 (a
  rejected step keeps x and t, so its stage 1 is still valid). Passing that
  state ourselves also stops diffrax from re-evaluating stage 1 when its first
  step is rejected, which would otherwise add 1 uncounted evaluation per
  rejection. The initial step is dt0 = (t1 - t0) / 100 unless given (no
  evaluations spent on step-size selection).

  Returns (x1, nfe) with nfe an int32 scalar array. If max_steps is exhausted
  diffrax raises a runtime error (loud, also under jit). Raises ValueError for
  rtol or atol <= 0 or max_steps < 1.
  """
  REGISTRY.spec("dopri5").check_options(dict(rtol=rtol, atol=atol, max_steps=max_steps))
  x0, t0, t1 = _state_and_times(x0, t0, t1)
  dtype = x0.dtype
  if dt0 is None:
    dt0 = (t1 - t0) / 100
  term = diffrax.ODETerm(lambda t, x, args: velocity_fn(x, t))
  # Dopri5's FSAL state is (first_step, f(x, t) at the step start).
  f0 = jnp.asarray(velocity_fn(x0, t0), dtype)
  solver_state = (jnp.array(False), f0)
  sol = diffrax.diffeqsolve(
      term, diffrax.Dopri5(), t0, t1, dt0, x0,
      stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
      max_steps=max_steps,
      solver_state=solver_state,
      saveat=diffrax.SaveAt(t1=True),
  )
  num_steps = jnp.asarray(sol.stats["num_steps"], jnp.int32)
  return sol.ys[-1], 1 + _DOPRI5_EVALS_PER_STEP * num_steps


def get_solver(name):
  """The ODE solver `name` with one contract: solver(velocity_fn, x0, **options) -> (x1, nfe).

  "euler", "midpoint", "heun", "rk4": options num_steps (required), t0, t1
  (see `solve`); "dopri5": options rtol, atol, t0, t1, max_steps, dt0 (see
  `solve_adaptive`). nfe is an int32 scalar array. Time runs from t0 = 0
  (noise) to t1 = 1 (data) by default. Raises ValueError listing the valid
  names for an unknown one.
  """
  return REGISTRY.get(name)
