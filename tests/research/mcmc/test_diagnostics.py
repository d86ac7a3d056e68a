"""Diagnostics against closed forms: AR(1) chains have ESS = n (1 - rho) / (1 + rho);
R-hat flags shifted chains; MCSE of the mean and of a quantile; arviz when importable."""

import numpy as np
import pytest
from scipy import signal, stats

from research import mcmc


def ar1(seed, rho, chains=4, draws=20000, shape=()):
  """Stationary AR(1) chains x_t = rho x_{t-1} + sqrt(1 - rho^2) e_t with N(0, 1) margins."""
  rng = np.random.default_rng(seed)
  e = rng.standard_normal((chains, draws) + shape) * np.sqrt(1 - rho ** 2)
  e[:, 0] = rng.standard_normal((chains,) + shape)
  return signal.lfilter([1.0], [1.0, -rho], e, axis=1)


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_ess_of_ar1_chains(rho):
  truth = 4 * 20000 * (1 - rho) / (1 + rho)
  ratios = np.array([[mcmc.ess_bulk(x) / truth, mcmc.ess_mean(x) / truth]
                     for x in (ar1(seed, rho) for seed in range(4))])
  assert np.all(np.abs(ratios - 1) < 0.15), ratios
  assert abs(ratios.mean() - 1) < 0.06, ratios.mean()


def test_tail_ess_of_ar1_chains_is_of_the_right_order():
  # The 5% indicator of a Gaussian AR(1) is less correlated than x: ESS_tail > ESS_bulk,
  # and far below the number of draws.
  x = ar1(0, 0.9)
  assert mcmc.ess_bulk(x) < mcmc.ess_tail(x) < 4 * 20000


def test_mcse_of_the_mean_and_of_a_quantile():
  rho = 0.5
  se_true = 1 / np.sqrt(4 * 20000 * (1 - rho) / (1 + rho))
  x = ar1(1, rho)
  assert abs(mcmc.mcse(x) / se_true - 1) < 0.1
  # median of N(0, 1): sd of the sample median of n_eff draws ~ sqrt(pi / 2) / sqrt(n_eff)
  medians = [np.median(ar1(s, rho, draws=2000)) for s in range(200)]
  spread = np.std(medians)
  estimates = [mcmc.mcse(ar1(s, rho, draws=2000), prob=0.5) for s in range(5)]
  assert np.all(np.abs(np.array(estimates) / spread - 1) < 0.35), (estimates, spread)


def test_rhat_flags_shifted_chains_and_accepts_mixed_ones():
  x = ar1(2, 0.5, draws=2000)
  assert mcmc.rhat(x) < 1.01
  shifted = x + np.array([0.0, 0.0, 0.0, 1.0])[:, None]
  assert mcmc.rhat(shifted) > 1.1
  scaled = x * np.array([1.0, 1.0, 1.0, 3.0])[:, None]     # the tail (folded) R-hat sees it
  assert mcmc.rhat(scaled) > 1.1
  # a trend within each chain: split R-hat sees it though the chains agree
  trend = x + np.linspace(-1, 1, 2000)[None, :]
  assert mcmc.rhat(trend) > 1.1


def test_per_component_shapes_and_bad_input():
  x = ar1(3, 0.3, draws=500, shape=(2, 3))
  for fn in (mcmc.rhat, mcmc.ess_bulk, mcmc.ess_tail, mcmc.ess_mean, mcmc.mcse):
    assert np.shape(fn(x)) == (2, 3)
  with pytest.raises(ValueError, match="samples"):
    mcmc.ess_bulk(np.zeros(10))
  with pytest.raises(ValueError, match="prob"):
    mcmc.mcse(x, prob=1.5)


def test_against_arviz():
  az = pytest.importorskip("arviz")
  x = ar1(4, 0.7, draws=1001) ** 3 + 0.1    # odd draws, skewed margins
  np.testing.assert_allclose(mcmc.rhat(x), az.rhat(x, method="rank"), rtol=1e-6)
  np.testing.assert_allclose(mcmc.ess_bulk(x), az.ess(x, method="bulk"), rtol=1e-6)
  np.testing.assert_allclose(mcmc.ess_tail(x), az.ess(x, method="tail"), rtol=1e-6)
  np.testing.assert_allclose(mcmc.ess_mean(x), az.ess(x, method="mean"), rtol=1e-6)
  np.testing.assert_allclose(mcmc.mcse(x), az.mcse(x, method="mean"), rtol=1e-6)
