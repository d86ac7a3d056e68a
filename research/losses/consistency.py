"""Consistency training (CT, iCT) and consistency distillation (CD) losses.

Noise convention: EDM's VE form, x_sigma = x0 + sigma z with sigma in
[sigma_min, sigma_max] (research/diffusion/consistency.py). Model functions are
consistency functions f(x, sigma) -> x0-estimate with sigma of shape (B,),
e.g. research.diffusion.consistency.consistency_fn(apply, params).

One loss term per example (Song et al. 2023, "Consistency Models", CM eq. 7/10;
Song & Dhariwal 2023, "Improved Techniques for Training Consistency Models", iCT):
draw an interval index n of the N-point Karras grid s_0 = smin < ... < s_{N-1} = smax
(`num_points` = N, possibly traced: it follows a curriculum N(k)) and one z ~ N(0, I),

    x_hi = x0 + s_{n+1} z                                  (through the online network)
    x_lo = x0 + s_n z                      (CT: the same z)
         = teacher ODE step from x_hi to s_n               (CD: Euler or Heun in sigma space)
    term = lambda(s_n) d(f_theta(x_hi, s_{n+1}), stop_gradient(f_target(x_lo, s_n)))

and the loss is the batch mean of the terms. Variants:

    ct_loss   uniform n, lambda = 1, d = squared L2 (CM's CT with the l2 metric),
              f_target = the EMA target network theta- (CM eq. 8).
    ict_loss  theta- = stop_gradient(theta) (no EMA), n from iCT's log-normal index
              distribution (P_mean = -1.1, P_std = 2), lambda = 1/(s_{n+1} - s_n),
              d = pseudo-Huber with c = 0.00054 sqrt(dim) on the per-example vector.
    cd_loss   like ct_loss (uniform n, lambda = 1, d = squared L2), x_lo from the teacher.

All three take the same options (index_distribution, distance, weighting) so
any combination can be tried; the defaults are the papers'.

Randomness: `key` gives example i its (n, z) through fold_in(key, i), so an
example's noise does not depend on the batch size. Dropout: a network with
dropout must use ONE dropout key for both passes (CM: "share the dropout
rng"); these losses call f_online and f_target with no key, so the caller
closes the same dropout key into both (the project's MLP has no dropout).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from research.diffusion import consistency as cm

__all__ = ["INDEX_DISTRIBUTIONS", "DISTANCES", "WEIGHTINGS", "sample_index", "consistency_loss",
           "ct_loss", "ict_loss", "cd_loss"]

INDEX_DISTRIBUTIONS = ("uniform", "lognormal")
DISTANCES = ("l2", "pseudo_huber")
WEIGHTINGS = ("uniform", "ict")


def _check_choice(name, value, valid):
  if value not in valid:
    raise ValueError(f"unknown {name}={value!r}; valid: {list(valid)}")


def sample_index(key, num_points, max_points, index_distribution="uniform", *, probs=None,
                 **grid):
  """One interval index n in {0, ..., N - 2} of an N-point grid (shape (), int32).

  "uniform": n ~ U{0..N-2} (CM); "lognormal": p(n) = cm.lognormal_index_probs(N, max_points,
  **grid) (iCT), drawn by inverting its CDF at u ~ U(0, 1); pass `probs` to reuse
  precomputed probabilities (the loss computes them once per batch, not per example).
  num_points may be traced.
  """
  _check_choice("index_distribution", index_distribution, INDEX_DISTRIBUTIONS)
  last = jnp.asarray(num_points) - 2
  if index_distribution == "uniform":
    return jax.random.randint(key, (), 0, last + 1)
  if probs is None:
    probs = cm.lognormal_index_probs(num_points, max_points, **grid)
  u = jax.random.uniform(key, (), jnp.float32)
  n = jnp.searchsorted(jnp.cumsum(probs), u, side="right")
  return jnp.clip(n, 0, last).astype(jnp.int32)


def consistency_loss(f_online, f_target, key, x0, *, num_points, max_points,
                     sigma_min=cm.SIGMA_MIN, sigma_max=cm.SIGMA_MAX, rho=cm.RHO,
                     index_distribution="uniform", distance="l2", weighting="uniform",
                     huber_c=None, teacher=None):
  """The consistency loss E lambda(s_n) d(f_theta(x_hi, s_{n+1}), sg(f_target(x_lo, s_n))) (module docstring).

  Args:
    f_online: f_theta(x, sigma), gradients flow through it.
    f_target: f_theta-(x, sigma); its output is wrapped in stop_gradient.
    key: PRNG key; the loss is a deterministic function of it.
    x0: data batch (B, ...).
    num_points: N, the number of grid points (int or traced int32, 2 <= N <= max_points).
    max_points: static upper bound of N (the padded length of the index distribution).
    sigma_min, sigma_max, rho: the Karras grid.
    index_distribution: "uniform" | "lognormal".
    distance: "l2" (squared L2 summed over an example) | "pseudo_huber".
    weighting: "uniform" (lambda = 1) | "ict" (lambda = 1/(s_{n+1} - s_n)).
    huber_c: pseudo-Huber c (default 0.00054 sqrt(dim)).
    teacher: None for CT (x_lo = x0 + s_n z), or teacher(x_hi, s_hi, s_lo) -> x_lo,
      an ODE step of a diffusion model (CD), called under stop_gradient.

  Returns:
    (loss, metrics) with metrics num_points, mean distance, mean weight, mean sigma_hi.
  """
  _check_choice("index_distribution", index_distribution, INDEX_DISTRIBUTIONS)
  _check_choice("distance", distance, DISTANCES)
  _check_choice("weighting", weighting, WEIGHTINGS)
  if isinstance(num_points, int) and not 2 <= num_points <= max_points:
    raise ValueError(f"num_points must be in [2, max_points={max_points}], got {num_points!r}")
  x0 = jnp.asarray(x0, jnp.float32)
  batch = x0.shape[0]
  grid = dict(sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)

  probs = (cm.lognormal_index_probs(num_points, max_points, **grid)
           if index_distribution == "lognormal" else None)

  def draw(i):
    k_index, k_noise = jax.random.split(jax.random.fold_in(key, i))
    n = sample_index(k_index, num_points, max_points, index_distribution, probs=probs, **grid)
    return n, jax.random.normal(k_noise, x0.shape[1:], jnp.float32)

  n, z = jax.vmap(draw)(jnp.arange(batch))
  s_lo = cm.karras_sigmas(n, num_points, **grid)
  s_hi = cm.karras_sigmas(n + 1, num_points, **grid)
  expand = lambda s: s.reshape((batch,) + (1,) * (x0.ndim - 1))
  x_hi = x0 + expand(s_hi) * z
  if teacher is None:
    x_lo = x0 + expand(s_lo) * z
  else:
    x_lo = jax.lax.stop_gradient(teacher(x_hi, s_hi, s_lo))
  pred = f_online(x_hi, s_hi)
  target = jax.lax.stop_gradient(f_target(x_lo, s_lo))
  if distance == "l2":
    d = jnp.sum(jnp.reshape((pred - target) ** 2, (batch, -1)), axis=-1)
  else:
    c = cm.pseudo_huber_c(math.prod(x0.shape[1:])) if huber_c is None else huber_c
    d = cm.pseudo_huber(pred, target, c)
  w = cm.ict_weight(s_lo, s_hi) if weighting == "ict" else jnp.ones_like(s_lo)
  loss = jnp.mean(w * d)
  metrics = {"num_points": jnp.asarray(num_points, jnp.float32), "distance": jnp.mean(d),
             "weight": jnp.mean(w), "sigma_hi": jnp.mean(s_hi)}
  return loss, metrics


def ct_loss(f_online, f_target, key, x0, *, num_points, max_points, **options):
  """Consistency training (CM Algorithm 3): uniform n, lambda = 1, squared L2, EMA target f_target."""
  return consistency_loss(f_online, f_target, key, x0, num_points=num_points,
                          max_points=max_points, **options)


def ict_loss(f, key, x0, *, num_points, max_points, **options):
  """Improved consistency training (iCT): theta- = stop_gradient(theta), log-normal n,
  lambda = 1/(s_{n+1} - s_n), pseudo-Huber (overridable through options)."""
  options = {"index_distribution": "lognormal", "distance": "pseudo_huber", "weighting": "ict",
             **options}
  return consistency_loss(f, f, key, x0, num_points=num_points, max_points=max_points, **options)


def cd_loss(f_online, f_target, denoiser, key, x0, *, num_points, max_points, solver="heun",
            **options):
  """Consistency distillation (CM Algorithm 2): x_lo = one `solver` step of the teacher's
  PF-ODE dx/dsigma = (x - D(x; sigma))/sigma from (x_hi, s_{n+1}) to s_n.

  denoiser(x, sigma) -> x0 estimate, e.g. cm.denoiser_from_diffusion(model_fn, schedule, prediction).
  """
  _check_choice("solver", solver, cm.TEACHER_SOLVERS)
  teacher = lambda x, s_from, s_to: cm.teacher_step(denoiser, x, s_from, s_to, solver=solver)
  return consistency_loss(f_online, f_target, key, x0, num_points=num_points,
                          max_points=max_points, teacher=teacher, **options)
