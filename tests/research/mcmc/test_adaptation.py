"""window_adaptation: Stan's schedule, dual averaging, Welford, the regularised mass matrix,
and the tuned kernels on a 100-D Gaussian of condition number 1e3 and a correlated 2-D one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import mcmc
from research.mcmc import adaptation


def _windows(num_steps):
  is_slow, is_end = adaptation.schedule(num_steps)
  ends = [int(e) + 1 for e in np.flatnonzero(is_end)]
  starts = [int(np.argmax(is_slow))] + ends[:-1]
  assert is_slow.sum() == sum(e - s for s, e in zip(starts, ends))
  return list(zip(starts, ends))


def test_stan_schedule():
  # Stan's default 1000 warmup steps: 75 fast, slow windows 25 50 100 200 500, 50 fast.
  assert _windows(1000) == [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
  # short warmups: 15% / 75% / 10%
  assert _windows(100) == [(15, 90)]
  assert _windows(10) == []
  assert not adaptation.schedule(10)[0].any()


def test_dual_averaging_finds_the_target_step():
  # acceptance exp(-eps): the target 0.8 is reached at eps = -log 0.8
  state = adaptation.dual_averaging_init(1.0)
  for _ in range(2000):
    state = adaptation.dual_averaging_update(state, jnp.exp(-jnp.exp(state.log_step_size)), 0.8)
  np.testing.assert_allclose(np.exp(state.log_step_size_avg), -np.log(0.8), rtol=0.02)


@pytest.mark.parametrize("dense", [False, True])
def test_welford_pooled_batches_and_regularisation(dense):
  rng = np.random.default_rng(0)
  draws = rng.standard_normal((50, 4, 3)) @ np.array([[1, 0.5, 0], [0, 2, 0], [0, 0, 3.0]])
  state = adaptation.welford_init(3, dense)
  for batch in draws:
    state = adaptation.welford_update(state, jnp.asarray(batch, jnp.float32))
  flat = draws.reshape(-1, 3)
  cov = np.cov(flat.T) if dense else flat.var(0, ddof=1)
  n = flat.shape[0]
  want = n / (n + 5) * cov + 1e-3 * 5 / (n + 5) * (np.eye(3) if dense else 1.0)
  np.testing.assert_allclose(adaptation.regularized_inverse_mass_matrix(state), want,
                             rtol=1e-4, atol=1e-5)


def test_ill_conditioned_100d_gaussian_diagonal_mass():
  """Variances 1 .. 1e3: the adapted diagonal recovers them and NUTS then mixes in few steps."""
  dim = 100
  scales = np.logspace(0, 1.5, dim).astype(np.float32)

  def logdensity(x):
    return -0.5 * jnp.sum((x / scales) ** 2)

  result = mcmc.window_adaptation(jax.random.key(0), logdensity, jnp.ones((4, dim)), 600)
  minv = np.asarray(result.parameters["inverse_mass_matrix"])
  assert minv.shape == (dim,)
  ratio = minv / scales ** 2
  assert 0.6 < ratio.min() and ratio.max() < 1.6, (ratio.min(), ratio.max())
  assert set(result.parameters) == {"step_size", "inverse_mass_matrix", "max_tree_depth"}
  kernel = mcmc.nuts(logdensity, **result.parameters)
  samples, info = mcmc.run_chains(jax.random.key(1), kernel, result.positions, 500)
  samples = np.asarray(samples)
  assert np.all(mcmc.rhat(samples) < 1.05)
  assert mcmc.ess_bulk(samples).min() > 500            # of 2000 draws
  assert float(info.num_grad_evals.mean()) < 16         # an identity metric needs ~100
  var_ratio = samples.reshape(-1, dim).var(0) / scales ** 2
  assert 0.75 < var_ratio.mean() < 1.25
  acceptance = float(info.acceptance_rate.mean())
  assert 0.65 < acceptance < 0.95


def test_dense_mass_on_the_correlated_gaussian_with_hmc():
  cov = np.array([[1.0, 1.5], [1.5, 4.0]])
  precision = np.linalg.inv(cov)
  loc = np.array([0.0, 3.0])

  def logdensity(x):
    return -0.5 * (x - loc) @ precision @ (x - loc)

  result = mcmc.window_adaptation(jax.random.key(2), logdensity, jnp.zeros((4, 2)), 500,
                                  algorithm="hmc", dense_mass=True, num_integration_steps=5)
  minv = np.asarray(result.parameters["inverse_mass_matrix"])
  np.testing.assert_allclose(minv, cov, rtol=0.25, atol=0.15)
  assert result.parameters["num_integration_steps"] == 5
  kernel = mcmc.hmc(logdensity, **result.parameters)
  _, info = mcmc.run_chains(jax.random.key(3), kernel, result.positions, 300)
  # The dual-averaging iterates hover at the target; their average eps_bar sits below the
  # acceptance cliff of a 2-D Gaussian (eps = 2 in the whitened metric), so accepts more.
  assert 0.5 < float(info.acceptance_rate.mean()) < 0.98
  assert result.info.acceptance_rate.shape == (4, 500)
  assert abs(float(result.info.acceptance_rate[:, -50:].mean()) - 0.65) < 0.1


def test_mala_step_size_reaches_its_target_acceptance():
  def logdensity(x):
    return -0.5 * jnp.sum(x ** 2 / jnp.arange(1.0, 11.0))

  result = mcmc.window_adaptation(jax.random.key(4), logdensity, jnp.zeros((8, 10)), 300,
                                  algorithm="mala")
  kernel = mcmc.mala(logdensity, **result.parameters)
  _, info = mcmc.run_chains(jax.random.key(5), kernel, result.positions, 200)
  assert abs(float(info.acceptance_rate.mean()) - 0.574) < 0.08


def test_bad_arguments_are_refused():
  lp = lambda x: -0.5 * jnp.sum(x ** 2)
  with pytest.raises(ValueError, match="algorithm"):
    mcmc.window_adaptation(jax.random.key(0), lp, jnp.zeros((2, 2)), 10, algorithm="slice")
  with pytest.raises(ValueError, match="target_acceptance"):
    mcmc.window_adaptation(jax.random.key(0), lp, jnp.zeros((2, 2)), 10, target_acceptance=1.0)
  with pytest.raises(ValueError, match="num_steps"):
    mcmc.window_adaptation(jax.random.key(0), lp, jnp.zeros((2, 2)), 0)
  with pytest.raises(ValueError, match="max_tree_depth"):
    mcmc.window_adaptation(jax.random.key(0), lp, jnp.zeros((2, 2)), 10, max_tree_depth=0)
  with pytest.raises(ValueError, match="initial_positions"):
    mcmc.window_adaptation(jax.random.key(0), lambda x: jnp.log(x[0]), jnp.zeros((2, 2)), 10)
