"""Run several independent chains of one kernel: vmap over chains, lax.scan over steps.

Chain c draws step i's randomness from fold_in(split(key, C)[c], i); the first
num_warmup steps are burn-in (discarded, no adaptation), then num_steps steps run
and the state after every thin-th of them is kept (num_steps // thin draws).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import research.mcmc.base as base


def _num_chains(initial_positions) -> int:
  leaves = jax.tree.leaves(initial_positions)
  if not leaves:
    raise ValueError("run_chains: initial_positions is an empty pytree")
  sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
  if len(sizes) != 1 or None in sizes or 0 in sizes:
    raise ValueError(f"run_chains: every leaf of initial_positions needs the same leading "
                     f"chain axis C >= 1, got leading sizes {sorted(map(str, sizes))}")
  return sizes.pop()


def init_chains(kernel: base.Kernel, initial_positions, fn: str = "run_chains"):
  """vmap(kernel.init) over the leading chain axis; ValueError for a non-finite log-density."""
  _num_chains(initial_positions)
  states = jax.jit(jax.vmap(kernel.init))(initial_positions)
  logdensity = np.asarray(states.logdensity)
  bad = np.flatnonzero(~np.isfinite(logdensity))
  if bad.size:
    raise ValueError(f"{fn}: initial_positions of chains {bad.tolist()} have non-finite "
                     f"log-densities {logdensity[bad].tolist()}; start inside the support")
  return states


def run_chains(key, kernel: base.Kernel, initial_positions, num_steps: int, *,
               num_warmup: int = 0, thin: int = 1):
  """(samples, info) of C independent chains (module docstring for the schedule).

  key: PRNG key. kernel: a Kernel (rwm, mala, hmc, nuts). initial_positions: a pytree
  whose leaves share a leading chain axis C. num_steps >= 1 kept-phase steps,
  num_warmup >= 0 discarded burn-in steps, thin >= 1 (<= num_steps).

  Returns samples, the position pytree with leaves (C, num_steps // thin, ...), and
  Info with leaves (C, num_steps // thin): each kept draw's info summarises the
  `thin` steps that led to it (acceptance_rate and is_accepted averaged,
  is_divergent any, num_grad_evals summed), so info.num_grad_evals.sum() counts
  every gradient of the kept phase (burn-in excluded).
  """
  num_steps = base.check_positive_int("run_chains", "num_steps", num_steps)
  thin = base.check_positive_int("run_chains", "thin", thin)
  num_warmup = base.check_positive_int("run_chains", "num_warmup", num_warmup, minimum=0)
  if thin > num_steps:
    raise ValueError(f"run_chains: thin={thin} must be <= num_steps={num_steps}")
  states = init_chains(kernel, initial_positions)
  num_chains = _num_chains(initial_positions)
  num_kept = num_steps // thin

  def one_chain(chain_key, state):
    def advance(state, i):
      return kernel.step(jax.random.fold_in(chain_key, i), state)

    state, _ = jax.lax.scan(lambda s, i: (advance(s, i)[0], None), state,
                            jnp.arange(num_warmup))

    def kept(state, j):
      steps = num_warmup + j * thin + jnp.arange(thin)
      state, infos = jax.lax.scan(advance, state, steps)
      info = base.Info(jnp.mean(infos.acceptance_rate),
                       jnp.mean(infos.is_accepted.astype(jnp.float32)),
                       jnp.any(infos.is_divergent), jnp.sum(infos.num_grad_evals))
      return state, (state.position, info)

    _, (samples, info) = jax.lax.scan(kept, state, jnp.arange(num_kept))
    return samples, info

  keys = jax.random.split(key, num_chains)
  return jax.jit(jax.vmap(one_chain))(keys, states)
