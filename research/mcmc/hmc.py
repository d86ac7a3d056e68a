"""Hamiltonian Monte Carlo with a fixed number of leapfrog steps (Duane et al. 1987; Neal 2011).

H(x, p) = -log p(x) + p^T M^-1 p / 2 with momentum p ~ N(0, M) (base.metric). The
leapfrog step of size eps (Neal 2011, eq. 5.18-5.20):

  p <- p + (eps / 2) grad log p(x);  x <- x + eps M^-1 p;  p <- p + (eps / 2) grad log p(x).

L steps from (x, p) give (x', p'), accepted with log_ratio = H(x, p) - H(x', p');
the energy error H(x', p') - H(x, p) > 1000 (or NaN) marks the step divergent.
The gradient at the current position is kept in the state, so a step costs
exactly L gradient evaluations.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

import research.mcmc.base as base


class Leaf(NamedTuple):
  """A point of a trajectory on flat vectors: position, momentum, log p, grad log p."""
  x: jax.Array
  p: jax.Array
  logdensity: jax.Array
  grad: jax.Array


def leapfrog(value_and_grad, metric: base.Metric, leaf: Leaf, step_size) -> Leaf:
  """One leapfrog step of size step_size (negative: backwards in time); one gradient."""
  p = leaf.p + 0.5 * step_size * leaf.grad
  x = leaf.x + step_size * metric.velocity(p)
  logdensity, grad = value_and_grad(x)
  return Leaf(x, p + 0.5 * step_size * grad, logdensity, grad)


def energy(metric: base.Metric, leaf: Leaf):
  """H = -log p(x) + K(p)."""
  return -leaf.logdensity + metric.kinetic_energy(leaf.p)



def hmc(logdensity_fn, step_size, num_integration_steps: int,
        inverse_mass_matrix=None) -> base.Kernel:
  """HMC kernel (module docstring): L = num_integration_steps leapfrog steps, then accept/reject.

  logdensity_fn: position pytree -> unnormalized log p (scalar, differentiable).
  step_size: eps, finite and > 0. num_integration_steps: L >= 1 (a Python int).
  inverse_mass_matrix: M^-1, None (identity), 1-D diagonal or 2-D positive definite.
  """
  base.check_step_size("hmc", step_size)
  num_integration_steps = base.check_positive_int("hmc", "num_integration_steps",
                                                  num_integration_steps)
  minv = base.check_inverse_mass_matrix("hmc", inverse_mass_matrix)

  def step(key, state: base.State):
    f = base.flat_state("hmc", logdensity_fn, state, minv, step_size)
    key_momentum, key_accept = jax.random.split(key)
    start = Leaf(f.x, f.metric.sample_momentum(key_momentum), state.logdensity, f.grad)
    end = jax.lax.fori_loop(
        0, num_integration_steps,
        lambda _, leaf: leapfrog(f.value_and_grad, f.metric, leaf, f.eps), start)
    log_ratio = energy(f.metric, start) - energy(f.metric, end)
    accepted = base.metropolis_accept(key_accept, log_ratio)
    divergent = jnp.isnan(log_ratio) | (-log_ratio > base.DIVERGENCE_THRESHOLD)
    new = base.accept_or_keep(accepted, f, state, end.x, end.logdensity, end.grad)
    info = base.Info(base.accept_probability(log_ratio), accepted, divergent,
                     jnp.asarray(num_integration_steps, jnp.int32))
    return new, info

  return base.Kernel(base.init_with_grad("hmc", logdensity_fn, minv), step)
