"""Tests for DDPM and DDIM: identities with DPM-Solver-1, the classical respaced-chain
formulas, the full training chain, and the distribution the stochastic samplers reach.

Setup (mixture, exact model, jitted samplers): mixture_setup.py. Time convention:
t = 1 noise, t = 0 data.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.data import gmm
from research.diffusion import exact, samplers, schedules
from research.metrics import distances
from tests.research.diffusion.mixture_setup import MIX, SCHEDULE, X_T, rmse, run


# ----------------------------------------------------------------------------
# Structural identities.
# ----------------------------------------------------------------------------
def test_ddim_eta0_is_deterministic_and_equals_dpm_solver_1():
  a = run("ddim", 12, key=jax.random.PRNGKey(1))
  b = run("ddim", 12, key=jax.random.PRNGKey(2))
  np.testing.assert_array_equal(a, b)
  grid = {"spacing": samplers.DDIM_SPACING}        # DDIM's default steps
  for method in ("multistep", "singlestep"):
    c = run("dpm_solver", 12, order=1, method=method, **grid)
    np.testing.assert_allclose(a, c, atol=2e-5)
  d = run("dpm_solver++", 12, order=1, **grid)
  np.testing.assert_allclose(a, d, atol=2e-5)


def test_ddim_eta_positive_adds_noise():
  a = run("ddim", 12, key=jax.random.PRNGKey(1), eta=0.5)
  b = run("ddim", 12, key=jax.random.PRNGKey(2), eta=0.5)
  a2 = run("ddim", 12, key=jax.random.PRNGKey(1), eta=0.5)
  det = run("ddim", 12)
  np.testing.assert_array_equal(a, a2)
  assert float(jnp.min(jnp.abs(a - b))) > 0.0
  assert rmse(a, np.asarray(b)) > 1e-2 and rmse(a, np.asarray(det)) > 1e-2


def _classical_chain(key, x, t_grid, eta=None):
  """DDPM (eta=None) or DDIM(eta) written as in Ho et al. / Song et al., in float64 numpy."""
  x = np.asarray(x, np.float64)
  ab = np.asarray(SCHEDULE.alpha(jnp.asarray(t_grid)), np.float64) ** 2
  ab = np.append(ab, 1.0)                                     # alpha_bar_prev = 1 at the end
  for n, t in enumerate(t_grid):
    eps = np.asarray(gmm.eps(MIX, jnp.asarray(x, jnp.float32), np.sqrt(ab[n]),
                             np.sqrt(1 - ab[n])), np.float64)
    x0 = (x - np.sqrt(1 - ab[n]) * eps) / np.sqrt(ab[n])
    z = np.asarray(samplers.per_example_normal(key, n, jnp.zeros(x.shape)), np.float64)
    a_prev = ab[n + 1]
    if eta is None:
      beta = 1 - ab[n] / a_prev
      mean = (np.sqrt(a_prev) * beta / (1 - ab[n]) * x0
              + np.sqrt(1 - beta) * (1 - a_prev) / (1 - ab[n]) * x)
      x = mean + np.sqrt((1 - a_prev) / (1 - ab[n]) * beta) * z
    else:
      s = eta * np.sqrt((1 - a_prev) / (1 - ab[n])) * np.sqrt(1 - ab[n] / a_prev)
      x = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev - s**2) * eps + s * z
  return x


def test_ddpm_and_ddim_match_the_classical_formulas_on_a_respaced_chain():
  key = jax.random.PRNGKey(7)
  x = X_T[:8]
  # Respaced chain: diffusers' "linspace" indices 999, 888, ..., 0 (10 steps).
  idx = schedules.index_grid(1000, 10, "linspace")
  t_grid = (idx + 1.0) / 1000
  out = run("ddpm", 10, key=key, x=x, spacing="linspace")
  np.testing.assert_allclose(out, _classical_chain(key, x, t_grid), atol=2e-4)
  out = run("ddim", 10, key=key, x=x, spacing="linspace", eta=0.7)
  np.testing.assert_allclose(out, _classical_chain(key, x, t_grid, eta=0.7),
                             atol=2e-4)


def test_ddpm_full_chain_uses_every_training_step():
  # num_steps = T: the respaced betas 1 - ab_n/ab_{n-1} are the original betas.
  small = schedules.discrete_vp(schedules.linear_betas(T=50, beta_end=0.2))
  model = exact.mixture_model_fn(MIX, small)
  key = jax.random.PRNGKey(3)
  x = X_T[:8]
  out = jax.jit(lambda k, x: samplers.ddpm(k, model, x, small, num_steps=50))(key, x)
  betas = np.asarray(schedules.linear_betas(T=50, beta_end=0.2), np.float64)
  ab = np.cumprod(1 - betas)
  xr = np.asarray(x, np.float64)
  for n, i in enumerate(range(49, -1, -1)):
    eps = np.asarray(gmm.eps(MIX, jnp.asarray(xr, jnp.float32), np.sqrt(ab[i]),
                             np.sqrt(1 - ab[i])), np.float64)
    x0 = (xr - np.sqrt(1 - ab[i]) * eps) / np.sqrt(ab[i])
    a_prev = ab[i - 1] if i > 0 else 1.0
    mean = (np.sqrt(a_prev) * betas[i] / (1 - ab[i]) * x0
            + np.sqrt(1 - betas[i]) * (1 - a_prev) / (1 - ab[i]) * xr)
    z = np.asarray(samplers.per_example_normal(key, n, jnp.zeros(x.shape)))
    xr = mean + np.sqrt((1 - a_prev) / (1 - ab[i]) * betas[i]) * z
  np.testing.assert_allclose(out, xr, atol=2e-4)


# ----------------------------------------------------------------------------
# Distributional accuracy of the stochastic samplers.
# ----------------------------------------------------------------------------
W2_N = 512
_w2 = jax.jit(distances.wasserstein2)


@functools.lru_cache(maxsize=None)
def _data_draws():
  keys = jax.random.split(jax.random.PRNGKey(11), 3)
  return [gmm.sample(k, MIX, W2_N) for k in keys]


@functools.lru_cache(maxsize=None)
def _w2_noise_floor():
  """Mean W2 between independent data draws of W2_N points (the sampling noise)."""
  d = _data_draws()
  return np.mean([float(_w2(d[0], d[1])), float(_w2(d[0], d[2])),
                  float(_w2(d[1], d[2]))])


def _w2_ratio(samples):
  d = _data_draws()
  return np.mean([float(_w2(samples, d[0])), float(_w2(samples, d[1]))]) / _w2_noise_floor()


def _mixture_moments(mix):
  w, mu, s = (np.asarray(v, np.float64) for v in (mix.weights, mix.means, mix.stds))
  mean = w @ mu
  second = np.einsum("k,ki,kj->ij", w, mu, mu) + np.sum(w * s**2) * np.eye(mu.shape[1])
  return mean, second - np.outer(mean, mean)


@pytest.mark.parametrize("name,num_steps,options", [
    ("ddpm", 1000, {}),
    ("ddim", 200, {"eta": 1.0}),
    ("dpm_solver++", 100, {"sde": True}),
])
def test_stochastic_samplers_reach_the_data_distribution(name, num_steps, options):
  key_x, key = jax.random.split(jax.random.PRNGKey(12))
  x_T = jax.random.normal(key_x, (W2_N, 2))
  out = np.asarray(run(name, num_steps, key=key, x=x_T, **options), np.float64)
  assert _w2_ratio(out) < 1.5
  # Moments within sampling error (4 standard errors for the mean, 15% for the covariance).
  mean, cov = _mixture_moments(MIX)
  np.testing.assert_allclose(out.mean(0), mean, atol=4 * np.sqrt(np.max(np.diag(cov)) / W2_N))
  np.testing.assert_allclose(np.cov(out.T), cov, atol=0.15 * np.max(np.diag(cov)))


def test_w2_check_detects_a_wrong_distribution():
  # Negative control: the same mixture with 1.5x wider components fails.
  wide = gmm.GaussianMixture(MIX.weights, MIX.means, 1.5 * MIX.stds)
  assert _w2_ratio(gmm.sample(jax.random.PRNGKey(13), wide, W2_N)) > 1.5
