"""The No-U-Turn Sampler, multinomial variant (Hoffman & Gelman 2014; Betancourt 2017).

From (x, p), p ~ N(0, M), the trajectory doubles: at depth d a direction
v in {-1, +1} is drawn and a subtree of 2^d leapfrog steps (step v eps, hmc.leapfrog)
is built from the trajectory's end in that direction. Each state z has weight
w(z) = exp(-(H(z) - H0)).

* Within a subtree the proposal is drawn by progressive multinomial sampling: the
  k-th new state replaces it with probability w_k / sum_{i<=k} w_i.
* Merging a valid subtree into the tree, its proposal replaces the tree's with
  probability min(1, W_subtree / W_tree) (biased progressive sampling, Betancourt
  2017, appendix A.3.2).
* Generalised U-turn criterion (Betancourt 2013, 2017): a (sub)trajectory with end
  velocities M^-1 p_-, M^-1 p_+ and momentum sum rho = sum_i p_i is turning unless
  (M^-1 p_-) . rho > 0 and (M^-1 p_+) . rho > 0. It is checked on every balanced
  sub-subtree of the new subtree (the iterative form: velocities and momentum
  prefix sums stored at the 2^j-aligned leaves, one slot per level j) and on the
  whole tree after each merge.
* A state with H - H0 > 1000 (or NaN) is a divergence. A subtree that turns or
  diverges is discarded (its states are not candidates) and the doubling stops;
  it also stops at max_tree_depth doublings (at most 2^max_tree_depth - 1 steps).

acceptance_rate is Stan's statistic: the mean of min(1, exp(H0 - H)) over all new
states. Everything is lax.while_loop, so the kernel jits and vmaps.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

import research.mcmc.base as base
from research.mcmc.hmc import Leaf, energy, leapfrog

MAX_SUPPORTED_DEPTH = 30


class _Subtree(NamedTuple):
  end: Leaf
  proposal: Leaf
  log_weight: jax.Array
  rho: jax.Array
  sum_accept: jax.Array
  num_steps: jax.Array
  turning: jax.Array
  diverging: jax.Array
  v_checkpoints: jax.Array   # (max_depth, dim) velocity at the last 2^j-aligned leaf
  s_checkpoints: jax.Array   # (max_depth, dim) momentum prefix sum before that leaf


class _Tree(NamedTuple):
  left: Leaf
  right: Leaf
  proposal: Leaf
  log_weight: jax.Array
  rho: jax.Array
  sum_accept: jax.Array
  num_steps: jax.Array
  depth: jax.Array
  turning: jax.Array
  diverging: jax.Array


def _is_turning(v_left, v_right, rho):
  return ~((jnp.dot(v_left, rho) > 0) & (jnp.dot(v_right, rho) > 0))


def nuts(logdensity_fn, step_size, inverse_mass_matrix=None, max_tree_depth: int = 10
         ) -> base.Kernel:
  """Multinomial NUTS kernel (module docstring).

  logdensity_fn: position pytree -> unnormalized log p (scalar, differentiable).
  step_size: eps, finite and > 0. inverse_mass_matrix: M^-1, None (identity),
  1-D diagonal or 2-D positive definite. max_tree_depth: doublings, 1 <= d <= 30.
  Info.num_grad_evals is the number of leapfrog steps taken (discarded subtree included).
  """
  base.check_step_size("nuts", step_size)
  max_tree_depth = base.check_positive_int("nuts", "max_tree_depth", max_tree_depth)
  if max_tree_depth > MAX_SUPPORTED_DEPTH:
    raise ValueError(f"nuts: max_tree_depth must be <= {MAX_SUPPORTED_DEPTH}, "
                     f"got {max_tree_depth}")
  minv = base.check_inverse_mass_matrix("nuts", inverse_mass_matrix)
  levels = jnp.arange(1, max_tree_depth + 1, dtype=jnp.int32)
  level_sizes = jnp.left_shift(1, levels)

  def step(key, state: base.State):
    f = base.flat_state("nuts", logdensity_fn, state, minv, step_size)
    flat, grad, unravel, metric, value_and_grad, eps = f
    dim, dtype = flat.shape[0], flat.dtype
    key_momentum, key_tree = jax.random.split(key)
    start = Leaf(flat, metric.sample_momentum(key_momentum), state.logdensity, grad)
    energy0 = energy(metric, start)
    zeros = jnp.zeros((), dtype)
    false = jnp.zeros((), bool)

    def build_subtree(key, start_leaf, direction, depth):
      num_leaves = jnp.left_shift(1, depth)

      def cond(sub):
        return (sub.num_steps < num_leaves) & ~sub.turning & ~sub.diverging

      def body(sub):
        n = sub.num_steps
        leaf = leapfrog(value_and_grad, metric, sub.end, direction * eps)
        error = energy(metric, leaf) - energy0
        diverging = jnp.isnan(error) | (error > base.DIVERGENCE_THRESHOLD)
        log_w = jnp.where(jnp.isnan(error), -jnp.inf, -error)
        log_weight = jnp.logaddexp(sub.log_weight, log_w)
        u = jax.random.uniform(jax.random.fold_in(key, n), (), dtype)
        take = jnp.log(u) < log_w - log_weight
        proposal = jax.tree.map(lambda a, b: jnp.where(take, a, b), leaf, sub.proposal)
        velocity = metric.velocity(leaf.p)
        rho = sub.rho + leaf.p
        store = (n % level_sizes) == 0
        v_ck = jnp.where(store[:, None], velocity, sub.v_checkpoints)
        s_ck = jnp.where(store[:, None], sub.rho, sub.s_checkpoints)
        check = (((n + 1) % level_sizes) == 0) & (levels <= depth)
        rho_levels = rho - s_ck
        turn = ~((jnp.sum(v_ck * rho_levels, -1) > 0) & (rho_levels @ velocity > 0))
        return _Subtree(leaf, proposal, log_weight, rho,
                        sub.sum_accept + base.accept_probability(-error), n + 1,
                        jnp.any(check & turn), diverging, v_ck, s_ck)

      checkpoints = jnp.zeros((max_tree_depth, dim), dtype)
      init = _Subtree(start_leaf, start_leaf, jnp.asarray(-jnp.inf, dtype),
                      jnp.zeros((dim,), dtype), zeros, jnp.zeros((), jnp.int32), false, false,
                      checkpoints, checkpoints)
      return jax.lax.while_loop(cond, body, init)

    def cond(tree):
      return ~tree.turning & ~tree.diverging & (tree.depth < max_tree_depth)

    def body(tree):
      key_direction, key_subtree, key_merge = jax.random.split(
          jax.random.fold_in(key_tree, tree.depth), 3)
      forward = jax.random.bernoulli(key_direction)
      direction = jnp.where(forward, 1.0, -1.0).astype(dtype)
      pick = lambda a, b: jax.tree.map(lambda u, v: jnp.where(forward, u, v), a, b)
      sub = build_subtree(key_subtree, pick(tree.right, tree.left), direction, tree.depth)
      valid = ~sub.turning & ~sub.diverging
      u = jax.random.uniform(key_merge, (), dtype)
      take = valid & (jnp.log(u) < sub.log_weight - tree.log_weight)
      proposal = jax.tree.map(lambda a, b: jnp.where(take, a, b), sub.proposal, tree.proposal)
      left = pick(tree.left, sub.end)
      right = pick(sub.end, tree.right)
      rho = tree.rho + sub.rho
      turning = sub.turning | (valid & _is_turning(metric.velocity(left.p),
                                                   metric.velocity(right.p), rho))
      return _Tree(left, right, proposal,
                   jnp.where(valid, jnp.logaddexp(tree.log_weight, sub.log_weight),
                             tree.log_weight),
                   rho, tree.sum_accept + sub.sum_accept, tree.num_steps + sub.num_steps,
                   tree.depth + 1, turning, sub.diverging)

    tree = jax.lax.while_loop(cond, body, _Tree(
        start, start, start, zeros, start.p, zeros, jnp.zeros((), jnp.int32),
        jnp.zeros((), jnp.int32), false, false))
    proposal = tree.proposal
    new = base.State(unravel(proposal.x), proposal.logdensity, unravel(proposal.grad))
    info = base.Info(tree.sum_accept / jnp.maximum(tree.num_steps, 1).astype(dtype),
                     jnp.any(proposal.x != flat), tree.diverging, tree.num_steps)
    return new, info

  return base.Kernel(base.init_with_grad("nuts", logdensity_fn, minv), step)
