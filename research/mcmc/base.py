"""The MCMC kernel contract: state, info, kernel, argument checks and the mass-matrix metric.

A kernel is ``Kernel(init, step)``: ``init(position) -> State`` and
``step(key, state) -> (State, Info)``, both pure, jittable and vmappable; the
position is any pytree and is flattened with ``jax.flatten_util.ravel_pytree``
inside the kernels (the state keeps the user's pytree).

Metropolis-Hastings acceptance (Metropolis et al. 1953; Hastings 1970): a proposal
y from x is accepted with probability min(1, exp(log_ratio)); a NaN log_ratio (a
NaN log-density, a NaN gradient, inf - inf) is a rejection, and a -inf
log-density gives log_ratio = -inf, so a chain never leaves the support.

The metric of a positive-definite inverse mass matrix M^-1 (diagonal: a 1-D array;
dense: a 2-D array; Neal 2011, "MCMC using Hamiltonian dynamics", section 5.4.1):
momentum p ~ N(0, M), kinetic energy K(p) = p^T M^-1 p / 2, velocity M^-1 p.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

# Energy error H(new) - H(start) above which a trajectory is divergent (Stan's value).
DIVERGENCE_THRESHOLD = 1000.0


class State(NamedTuple):
  """A chain's state: position (the user's pytree), log p(position), its gradient (None for RWM)."""
  position: Any
  logdensity: jax.Array
  grad: Any = None


class Info(NamedTuple):
  """What one step did.

  acceptance_rate: min(1, exp(log_ratio)) (0 for a NaN ratio); for NUTS the mean of
    min(1, exp(-energy_error)) over the trajectory's states (Hoffman & Gelman 2014).
  is_accepted: whether the chain moved to the proposal.
  is_divergent: energy error > DIVERGENCE_THRESHOLD or NaN (always False for RWM and MALA).
  num_grad_evals: gradients of log p evaluated in this step (RWM 0, MALA 1, HMC L,
    NUTS the leapfrog steps taken).
  """
  acceptance_rate: jax.Array
  is_accepted: jax.Array
  is_divergent: jax.Array
  num_grad_evals: jax.Array


class Kernel(NamedTuple):
  """A transition kernel: init(position) -> State; step(key, state) -> (State, Info)."""
  init: Callable[[Any], State]
  step: Callable[[jax.Array, State], tuple[State, Info]]


def is_concrete(x) -> bool:
  """Whether x has a value at trace time (not a jit / vmap / grad tracer)."""
  return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(x))


def check_step_size(fn: str, step_size):
  """ValueError naming step_size unless it is a finite scalar > 0 (traced: shape only)."""
  if np.ndim(step_size) != 0:
    raise ValueError(f"{fn}: step_size must be a scalar, got shape {np.shape(step_size)}")
  if is_concrete(step_size):
    value = float(step_size)
    if not (math.isfinite(value) and value > 0):
      raise ValueError(f"{fn}: step_size must be finite and > 0, got {value}")


def check_positive_int(fn: str, name: str, value, minimum: int = 1):
  """ValueError naming `name` unless value is a Python int >= minimum."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{fn}: {name} must be an int >= {minimum}, got {value!r}")
  return int(value)


def check_inverse_mass_matrix(fn: str, inverse_mass_matrix, name: str = "inverse_mass_matrix"):
  """The matrix as a float array after shape and (when concrete) positive-definiteness checks.

  None means the identity. 1-D: the diagonal, every entry finite and > 0. 2-D: a
  square symmetric matrix with a Cholesky factor (all eigenvalues > 0).
  """
  if inverse_mass_matrix is None:
    return None
  m = jnp.asarray(inverse_mass_matrix)
  if not jnp.issubdtype(m.dtype, jnp.floating):
    m = m.astype(jnp.float32)
  if m.ndim not in (1, 2) or (m.ndim == 2 and m.shape[0] != m.shape[1]) or m.shape[0] == 0:
    raise ValueError(f"{fn}: {name} must be a non-empty 1-D diagonal or a square "
                     f"2-D matrix, got shape {m.shape}")
  if is_concrete(m):
    a = np.asarray(m, np.float64)
    if not np.all(np.isfinite(a)):
      raise ValueError(f"{fn}: {name} must be finite")
    if a.ndim == 1:
      if not np.all(a > 0):
        raise ValueError(f"{fn}: {name} (diagonal) must be > 0, got min {a.min()}")
    else:
      if not np.allclose(a, a.T, rtol=1e-5, atol=1e-8 * max(1.0, np.abs(a).max())):
        raise ValueError(f"{fn}: {name} must be symmetric")
      if np.linalg.eigvalsh(a).min() <= 0:
        raise ValueError(f"{fn}: {name} must be positive definite, got smallest "
                         f"eigenvalue {np.linalg.eigvalsh(a).min():.3g}")
  return m


def check_matrix_size(fn: str, inverse_mass_matrix, dim: int,
                      name: str = "inverse_mass_matrix"):
  """ValueError naming the matrix when its size is not the flattened position's."""
  if inverse_mass_matrix is not None and inverse_mass_matrix.shape[0] != dim:
    raise ValueError(f"{fn}: {name} has shape {inverse_mass_matrix.shape} but the "
                     f"position has {dim} entries (flattened)")


def check_initial_logdensity(fn: str, logdensity):
  """ValueError when a concrete initial log-density is not finite (no chain can start there)."""
  if is_concrete(logdensity):
    value = np.asarray(logdensity)
    if not np.all(np.isfinite(value)):
      raise ValueError(f"{fn}: the initial position has a non-finite log-density "
                       f"({value}); start inside the support")


def flat_logdensity(logdensity_fn, unravel):
  """x_flat -> log p(unravel(x_flat)) as a float scalar."""
  return lambda x: jnp.asarray(logdensity_fn(unravel(x))).astype(x.dtype).reshape(())


def flat_value_and_grad(logdensity_fn, unravel):
  """x_flat -> (log p, grad log p) on the flattened position (one gradient evaluation)."""
  return jax.value_and_grad(flat_logdensity(logdensity_fn, unravel))


def ravel(position):
  """(flat float vector, unravel) of a position pytree (integers are promoted to float32)."""
  flat, unravel = ravel_pytree(position)
  if not jnp.issubdtype(flat.dtype, jnp.floating):
    raise ValueError(f"position must hold floating-point arrays, got dtype {flat.dtype}")
  return flat, unravel


def init_with_grad(fn: str, logdensity_fn, inverse_mass_matrix):
  """init(position) -> State with log p and its gradient (mala, hmc, nuts)."""

  def init(position) -> State:
    flat, unravel = ravel(position)
    check_matrix_size(fn, inverse_mass_matrix, flat.shape[0])
    logdensity, grad = flat_value_and_grad(logdensity_fn, unravel)(flat)
    check_initial_logdensity(fn, logdensity)
    return State(position, logdensity, unravel(grad))

  return init


class Flat(NamedTuple):
  """A gradient kernel's state as flat vectors, and what its step computes with."""
  x: Any                  # flattened position
  grad: Any               # flattened grad log p at x
  unravel: Callable       # flat vector -> position pytree
  metric: "Metric"        # of the inverse mass matrix, at x's size and dtype
  value_and_grad: Callable  # flat x -> (log p, grad log p)
  eps: Any                # the step size in x's dtype


def flat_state(fn: str, logdensity_fn, state: State, inverse_mass_matrix, step_size) -> Flat:
  """The Flat view of `state` for kernel `fn` (checks the matrix size against the position)."""
  x, unravel = ravel(state.position)
  grad, _ = ravel(state.grad)
  dim = x.shape[0]
  check_matrix_size(fn, inverse_mass_matrix, dim)
  return Flat(x, grad, unravel, metric(inverse_mass_matrix, dim, x.dtype),
              flat_value_and_grad(logdensity_fn, unravel), jnp.asarray(step_size, x.dtype))


def accept_or_keep(accepted, flat: Flat, state: State, x, logdensity, grad) -> State:
  """The proposal (x, log p, grad) where accepted, else the current state."""
  return State(flat.unravel(jnp.where(accepted, x, flat.x)),
               jnp.where(accepted, logdensity, state.logdensity),
               flat.unravel(jnp.where(accepted, grad, flat.grad)))


def accept_probability(log_ratio):
  """min(1, exp(log_ratio)), 0 for a NaN ratio."""
  return jnp.where(jnp.isnan(log_ratio), 0.0, jnp.exp(jnp.minimum(log_ratio, 0.0)))


def metropolis_accept(key, log_ratio):
  """log U < log_ratio with U ~ Uniform(0, 1); NaN compares False, so it is a rejection."""
  log_u = jnp.log(jax.random.uniform(key, (), dtype=jnp.result_type(log_ratio)))
  return log_u < log_ratio


class Metric(NamedTuple):
  """Functions of the inverse mass matrix M^-1 on flat vectors (module docstring)."""
  sample_momentum: Callable   # key -> p ~ N(0, M)
  kinetic_energy: Callable    # p -> p^T M^-1 p / 2
  velocity: Callable          # p -> M^-1 p
  sample_noise: Callable      # key -> r ~ N(0, M^-1)
  mass_norm: Callable         # r -> r^T M r (the quadratic form of N(0, M^-1))


def metric(inverse_mass_matrix, dim: int, dtype) -> Metric:
  """The Metric of a diagonal (1-D), dense (2-D) or identity (None) inverse mass matrix.

  Dense: with M^-1 = L L^T (Cholesky), p = L^-T z ~ N(0, M), r = L z ~ N(0, M^-1) and
  r^T M r = |L^-1 r|^2.
  """
  if inverse_mass_matrix is None:
    normal = lambda key: jax.random.normal(key, (dim,), dtype)
    return Metric(normal, lambda p: 0.5 * jnp.dot(p, p), lambda p: p, normal,
                  lambda r: jnp.dot(r, r))
  minv = jnp.asarray(inverse_mass_matrix, dtype)
  if minv.ndim == 1:
    sqrt_minv = jnp.sqrt(minv)
    return Metric(
        lambda key: jax.random.normal(key, (dim,), dtype) / sqrt_minv,
        lambda p: 0.5 * jnp.dot(p, minv * p),
        lambda p: minv * p,
        lambda key: sqrt_minv * jax.random.normal(key, (dim,), dtype),
        lambda r: jnp.dot(r, r / minv))
  chol = jnp.linalg.cholesky(minv)
  solve = jax.scipy.linalg.solve_triangular
  return Metric(
      lambda key: solve(chol, jax.random.normal(key, (dim,), dtype), lower=True, trans="T"),
      lambda p: 0.5 * jnp.dot(p, minv @ p),
      lambda p: minv @ p,
      lambda key: chol @ jax.random.normal(key, (dim,), dtype),
      lambda r: jnp.sum(jnp.square(solve(chol, r, lower=True))))
