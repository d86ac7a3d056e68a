"""Stan's windowed warmup: dual-averaging step size plus a diagonal or dense mass matrix.

Schedule (Stan reference manual, "HMC algorithm parameters", automatic parameter
tuning) for W warmup steps: an initial fast window of 75 steps, slow windows of 25,
50, 100, ... steps (the last stretched to the terminal buffer), a terminal fast
window of 50; when 75 + 25 + 50 > W they shrink to 15%, 75% and 10% of W, and
for W < 20 only the step size is adapted. At the end of each slow window the
inverse mass matrix becomes the regularised sample (co)variance of the window's
draws (n draws, pooled over chains; Welford's algorithm, Chan et al. 1979 for
merging a batch):

  M^-1 = (n / (n + 5)) Var + 1e-3 (5 / (n + 5)) I        (diagonal: the variances),

the step size is re-initialised by Stan's doubling / halving heuristic (one
leapfrog step crossing acceptance 0.8) and dual averaging restarts.

Dual averaging (Nesterov 2009; Hoffman & Gelman 2014, Algorithm 5), for target
acceptance delta and the step's acceptance statistic alpha_t:

  H_t = (1 - 1/(t + t0)) H_{t-1} + (delta - alpha_t) / (t + t0),
  log eps_t = mu - sqrt(t) / gamma H_t,
  log eps_bar_t = t^-kappa log eps_t + (1 - t^-kappa) log eps_bar_{t-1},

mu = log(10 eps_0), gamma = 0.05, t0 = 10, kappa = 0.75; after warmup eps = eps_bar.

Here C chains run in lockstep with shared parameters: alpha_t is the chains' mean
acceptance statistic and the windows pool all chains' draws.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import research.mcmc.base as base
import research.mcmc.chains as chains
from research.mcmc.hmc import Leaf, energy, hmc, leapfrog
from research.mcmc.mala import mala
from research.mcmc.nuts import nuts

DEFAULT_TARGET = {"nuts": 0.8, "hmc": 0.65, "mala": 0.574}
GAMMA, T0, KAPPA = 0.05, 10.0, 0.75


class DualAveraging(NamedTuple):
  """Dual-averaging state: log eps_t, log eps_bar_t, H_t, t, mu."""
  log_step_size: jax.Array
  log_step_size_avg: jax.Array
  h_bar: jax.Array
  t: jax.Array
  mu: jax.Array


def dual_averaging_init(step_size) -> DualAveraging:
  """Start at eps_0 = step_size with mu = log(10 eps_0)."""
  log_eps = jnp.log(jnp.asarray(step_size, jnp.float32))
  zero = jnp.zeros((), jnp.float32)
  return DualAveraging(log_eps, zero, zero, zero, jnp.log(10.0) + log_eps)


def dual_averaging_update(state: DualAveraging, accept_stat, target) -> DualAveraging:
  """One update of Hoffman & Gelman's Algorithm 5 (module docstring); NaN alpha counts as 0."""
  alpha = jnp.where(jnp.isnan(accept_stat), 0.0, accept_stat)
  t = state.t + 1
  eta = 1.0 / (t + T0)
  h_bar = (1 - eta) * state.h_bar + eta * (target - alpha)
  log_eps = state.mu - jnp.sqrt(t) / GAMMA * h_bar
  weight = t ** (-KAPPA)
  log_eps_avg = weight * log_eps + (1 - weight) * state.log_step_size_avg
  return DualAveraging(log_eps, log_eps_avg, h_bar, t, state.mu)


class Welford(NamedTuple):
  """Running count, mean and sum of squared deviations (a vector or a matrix)."""
  count: jax.Array
  mean: jax.Array
  m2: jax.Array


def welford_init(dim: int, dense: bool) -> Welford:
  return Welford(jnp.zeros((), jnp.float32), jnp.zeros((dim,), jnp.float32),
                 jnp.zeros((dim, dim) if dense else (dim,), jnp.float32))


def welford_update(state: Welford, batch) -> Welford:
  """Merge a batch of draws (B, dim) (Chan, Golub & LeVeque 1979)."""
  n_b = batch.shape[0]
  mean_b = batch.mean(0)
  centred = batch - mean_b
  dense = state.m2.ndim == 2
  m2_b = centred.T @ centred if dense else jnp.sum(centred ** 2, 0)
  n = state.count + n_b
  delta = mean_b - state.mean
  outer = jnp.outer(delta, delta) if dense else delta ** 2
  m2 = state.m2 + m2_b + outer * state.count * n_b / n
  return Welford(n, state.mean + delta * n_b / n, m2)


def regularized_inverse_mass_matrix(state: Welford):
  """(n / (n + 5)) Var + 1e-3 (5 / (n + 5)) I with Var the sample (co)variance (ddof 1)."""
  n = state.count
  var = state.m2 / jnp.maximum(n - 1, 1)
  shrink = 1e-3 * 5.0 / (n + 5.0)
  if var.ndim == 2:
    return (n / (n + 5.0)) * var + shrink * jnp.eye(var.shape[0], dtype=var.dtype)
  return (n / (n + 5.0)) * var + shrink


def schedule(num_steps: int) -> tuple[np.ndarray, np.ndarray]:
  """(is_slow, is_window_end) boolean arrays of length num_steps (module docstring)."""
  is_slow = np.zeros(num_steps, bool)
  is_end = np.zeros(num_steps, bool)
  if num_steps < 20:
    return is_slow, is_end
  init, term, window = 75, 50, 25
  if init + term + window > num_steps:
    init, term = int(0.15 * num_steps), int(0.1 * num_steps)
    window = num_steps - init - term
  start, last = init, num_steps - term
  while start < last:
    end = start + window
    if end + 2 * window > last:
      end = last
    is_slow[start:end] = True
    is_end[end - 1] = True
    start, window = end, 2 * window
  return is_slow, is_end


class AdaptationResult(NamedTuple):
  """parameters: keyword arguments of mcmc.<algorithm>(logdensity_fn, **parameters);
  positions: the chains' last warmup positions (leading chain axis), ready for
  run_chains; info: the warmup steps' Info with leaves (C, num_steps)."""
  parameters: dict
  positions: Any
  info: base.Info


def _kernel(algorithm, logdensity_fn, step_size, minv, num_integration_steps, max_tree_depth):
  if algorithm == "nuts":
    return nuts(logdensity_fn, step_size, minv, max_tree_depth)
  if algorithm == "hmc":
    return hmc(logdensity_fn, step_size, num_integration_steps, minv)
  return mala(logdensity_fn, step_size, inverse_mass_matrix=minv)


def _find_step_size(key, logdensity_fn, states, step_size, minv):
  """Stan's heuristic: double (halve) eps while one leapfrog step's mean acceptance over
  the chains stays above (below) 0.8; returns the first eps that crosses."""
  flat = jax.vmap(lambda p: ravel_pytree(p)[0])(states.position)
  grads = jax.vmap(lambda g: ravel_pytree(g)[0])(states.grad)
  unravel = ravel_pytree(jax.tree.map(lambda a: a[0], states.position))[1]
  value_and_grad = base.flat_value_and_grad(logdensity_fn, unravel)
  num_chains, dim = flat.shape
  metric = base.metric(minv, dim, flat.dtype)

  def log_accept(k, eps):
    def one(k, x, logp, g):
      start = Leaf(x, metric.sample_momentum(k), logp, g)
      end = leapfrog(value_and_grad, metric, start, eps)
      delta = energy(metric, start) - energy(metric, end)
      return jnp.where(jnp.isnan(delta), -jnp.inf, jnp.minimum(delta, 0.0))
    deltas = jax.vmap(one)(jax.random.split(k, num_chains), flat, states.logdensity, grads)
    return jax.nn.logsumexp(deltas) - jnp.log(num_chains)

  threshold = jnp.log(0.8)
  up = log_accept(jax.random.fold_in(key, 0), step_size) > threshold

  def cond(carry):
    i, _, done = carry
    return ~done & (i < 60)

  def body(carry):
    i, eps, _ = carry
    eps = jnp.where(up, 2.0 * eps, 0.5 * eps)
    above = log_accept(jax.random.fold_in(key, i + 1), eps) > threshold
    return i + 1, eps, jnp.where(up, ~above, above)

  _, eps, _ = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32),
                                              jnp.asarray(step_size, flat.dtype),
                                              jnp.zeros((), bool)))
  return eps


def window_adaptation(key, logdensity_fn, initial_positions, num_steps: int, *,
                      algorithm: str = "nuts", target_acceptance: float | None = None,
                      dense_mass: bool = False, initial_step_size: float = 1.0,
                      num_integration_steps: int = 10, max_tree_depth: int = 10,
                      find_step_size: bool = True) -> AdaptationResult:
  """Tune step size and inverse mass matrix by Stan's windowed warmup (module docstring).

  key: PRNG key. logdensity_fn: position pytree -> unnormalized log p.
  initial_positions: a pytree with a leading chain axis C >= 1 (chains share the
    parameters). num_steps: warmup steps (>= 1).
  algorithm: "nuts", "hmc" (num_integration_steps leapfrog steps) or "mala" (its
    inverse_mass_matrix is the preconditioner). target_acceptance: delta in (0, 1),
    default 0.8 / 0.65 / 0.574. dense_mass: a dense rather than diagonal matrix.
  initial_step_size: eps_0 (> 0). find_step_size: run Stan's step-size heuristic at
    the start and after each slow window (HMC and NUTS).

  Returns AdaptationResult; ``mcmc.nuts(logdensity_fn, **result.parameters)`` (or hmc,
  mala) is the tuned kernel and ``result.positions`` the chains' starting points.
  """
  fn = "window_adaptation"
  if algorithm not in DEFAULT_TARGET:
    raise ValueError(f"{fn}: algorithm must be one of {sorted(DEFAULT_TARGET)}, got "
                     f"{algorithm!r}")
  num_steps = base.check_positive_int(fn, "num_steps", num_steps)
  target = DEFAULT_TARGET[algorithm] if target_acceptance is None else target_acceptance
  if not 0 < float(target) < 1:
    raise ValueError(f"{fn}: target_acceptance must be in (0, 1), got {target}")
  base.check_step_size(fn, initial_step_size)
  # Validate the integer arguments by building the kernel once with concrete values.
  extra = {}
  if algorithm == "hmc":
    extra["num_integration_steps"] = base.check_positive_int(
        fn, "num_integration_steps", num_integration_steps)
  if algorithm == "nuts":
    nuts(logdensity_fn, 1.0, None, max_tree_depth)
    extra["max_tree_depth"] = int(max_tree_depth)
  states = chains.init_chains(
      _kernel(algorithm, logdensity_fn, 1.0, None, num_integration_steps, max_tree_depth),
      initial_positions, fn)
  num_chains = chains._num_chains(initial_positions)
  flat0 = jax.vmap(lambda p: ravel_pytree(p)[0])(initial_positions)
  dim, dtype = flat0.shape[1], flat0.dtype
  is_slow, is_end = schedule(num_steps)
  use_heuristic = find_step_size and algorithm != "mala"

  def run(key, states):
    minv = jnp.eye(dim, dtype=dtype) if dense_mass else jnp.ones((dim,), dtype)
    eps = jnp.asarray(initial_step_size, dtype)
    key_steps, key_heuristic = jax.random.split(key)
    if use_heuristic:
      eps = _find_step_size(jax.random.fold_in(key_heuristic, num_steps), logdensity_fn,
                            states, eps, minv)

    def body(carry, inputs):
      states, da, welford, eps, minv = carry
      i, slow, end = inputs
      kernel = _kernel(algorithm, logdensity_fn, eps, minv, num_integration_steps,
                       max_tree_depth)
      step_key = jax.random.fold_in(key_steps, i)
      states, info = jax.vmap(kernel.step)(jax.random.split(step_key, num_chains), states)
      da = dual_averaging_update(da, jnp.mean(info.acceptance_rate), target)
      eps = jnp.exp(da.log_step_size).astype(dtype)
      flat = jax.vmap(lambda p: ravel_pytree(p)[0])(states.position)
      welford = jax.tree.map(lambda a, b: jnp.where(slow, a, b),
                             welford_update(welford, flat), welford)

      def window_end(_):
        new_minv = regularized_inverse_mass_matrix(welford).astype(dtype)
        new_eps = eps
        if use_heuristic:
          new_eps = _find_step_size(jax.random.fold_in(key_heuristic, i), logdensity_fn, states,
                                    eps, new_minv)
        return (dual_averaging_init(new_eps), welford_init(dim, dense_mass), new_eps,
                new_minv)

      da, welford, eps, minv = jax.lax.cond(end, window_end, lambda _: (da, welford, eps, minv),
                                            None)
      return (states, da, welford, eps, minv), info

    carry = (states, dual_averaging_init(eps), welford_init(dim, dense_mass), eps, minv)
    (states, da, _, _, minv), info = jax.lax.scan(
        body, carry, (jnp.arange(num_steps), jnp.asarray(is_slow), jnp.asarray(is_end)))
    final_eps = jnp.exp(jnp.where(da.t > 0, da.log_step_size_avg, da.log_step_size))
    return final_eps, minv, states.position, jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), info)

  step_size, minv, positions, info = jax.jit(run)(key, states)
  step_size = float(step_size)
  if not (math.isfinite(step_size) and step_size > 0):
    raise ValueError(f"{fn}: the adapted step size is {step_size}; the log-density or its "
                     f"gradient is not finite along the chains")
  parameters = {"step_size": step_size, "inverse_mass_matrix": minv, **extra}
  return AdaptationResult(parameters, positions, info)
