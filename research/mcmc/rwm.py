"""Random-walk Metropolis (Metropolis et al. 1953; Hastings 1970).

Proposal y = x + step_size * z, z ~ N(0, I) on the flattened position (or
z ~ N(0, C) with ``proposal_covariance=C``: a 1-D diagonal or a 2-D matrix); the
proposal is symmetric, so the acceptance log-ratio is log p(y) - log p(x). No
gradient is evaluated. Optimal acceptance in high dimension about 0.234
(Roberts, Gelman & Gilks 1997).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import research.mcmc.base as base


def rwm(logdensity_fn, step_size, *, proposal_covariance=None) -> base.Kernel:
  """Random-walk Metropolis kernel: y = x + step_size * N(0, C), accept w.p. min(1, p(y)/p(x)).

  logdensity_fn: position pytree -> unnormalized log p (scalar; NaN and -inf are rejections).
  step_size: the proposal scale, finite and > 0.
  proposal_covariance: C, None (identity), a 1-D diagonal or a 2-D positive-definite matrix.
  """
  base.check_step_size("rwm", step_size)
  cov = base.check_inverse_mass_matrix("rwm", proposal_covariance, "proposal_covariance")

  def init(position) -> base.State:
    flat, unravel = base.ravel(position)
    base.check_matrix_size("rwm", cov, flat.shape[0], "proposal_covariance")
    logdensity = base.flat_logdensity(logdensity_fn, unravel)(flat)
    base.check_initial_logdensity("rwm", logdensity)
    return base.State(position, logdensity, None)

  def step(key, state: base.State):
    flat, unravel = base.ravel(state.position)
    base.check_matrix_size("rwm", cov, flat.shape[0], "proposal_covariance")
    key_noise, key_accept = jax.random.split(key)
    noise = base.metric(cov, flat.shape[0], flat.dtype).sample_noise(key_noise)
    proposal = flat + jnp.asarray(step_size, flat.dtype) * noise
    logdensity = base.flat_logdensity(logdensity_fn, unravel)(proposal)
    log_ratio = logdensity - state.logdensity
    accepted = base.metropolis_accept(key_accept, log_ratio)
    new = base.State(unravel(jnp.where(accepted, proposal, flat)),
                     jnp.where(accepted, logdensity, state.logdensity), None)
    info = base.Info(base.accept_probability(log_ratio), accepted, jnp.zeros((), bool),
                     jnp.zeros((), jnp.int32))
    return new, info

  return base.Kernel(init, step)
