"""Metropolis-adjusted Langevin algorithm (Roberts & Tweedie 1996; Rossky, Doll & Friedman 1978).

On the flattened position x with g(x) = grad log p(x) and a preconditioner A (the
inverse mass matrix; identity by default, Girolami & Calderhead 2011 for A != I):

  y = x + eps A g(x) + sqrt(2 eps) A^(1/2) z,   z ~ N(0, I),
  q(y | x) = N(y; x + eps A g(x), 2 eps A),
  log_ratio = log p(y) - log p(x) + log q(x | y) - log q(y | x),
  log q(a | b) = -|a - b - eps A g(b)|^2_{A^-1} / (4 eps) + const.

One gradient evaluation per step (at y; the current gradient is kept in the
state). Optimal acceptance in high dimension about 0.574 (Roberts & Rosenthal 1998).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import research.mcmc.base as base


def mala(logdensity_fn, step_size, *, inverse_mass_matrix=None) -> base.Kernel:
  """MALA kernel (module docstring): Langevin proposal with the asymmetric Hastings correction.

  logdensity_fn: position pytree -> unnormalized log p (scalar, differentiable).
  step_size: eps, finite and > 0 (the proposal variance is 2 eps A).
  inverse_mass_matrix: A, None (identity), a 1-D diagonal or a 2-D positive-definite matrix.
  """
  base.check_step_size("mala", step_size)
  minv = base.check_inverse_mass_matrix("mala", inverse_mass_matrix)

  def step(key, state: base.State):
    f = base.flat_state("mala", logdensity_fn, state, minv, step_size)
    flat, grad, m, eps = f.x, f.grad, f.metric, f.eps
    key_noise, key_accept = jax.random.split(key)
    proposal = flat + eps * m.velocity(grad) + jnp.sqrt(2 * eps) * m.sample_noise(key_noise)
    logdensity, new_grad = f.value_and_grad(proposal)

    def log_q(to, frm, grad_frm):   # log q(to | frm) up to a constant
      return -m.mass_norm(to - frm - eps * m.velocity(grad_frm)) / (4 * eps)

    log_ratio = (logdensity - state.logdensity + log_q(flat, proposal, new_grad)
                 - log_q(proposal, flat, grad))
    accepted = base.metropolis_accept(key_accept, log_ratio)
    new = base.accept_or_keep(accepted, f, state, proposal, logdensity, new_grad)
    info = base.Info(base.accept_probability(log_ratio), accepted, jnp.zeros((), bool),
                     jnp.ones((), jnp.int32))
    return new, info

  return base.Kernel(base.init_with_grad("mala", logdensity_fn, minv), step)
