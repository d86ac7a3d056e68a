"""Tests for research.metrics.distances against brute force and closed forms."""
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize
from scipy import stats

from research.metrics import distances as D

_w2 = jax.jit(D.wasserstein2)
_sw = jax.jit(D.sliced_wasserstein, static_argnames="num_projections")
_mmd = jax.jit(D.mmd, static_argnames="unbiased")
_energy = jax.jit(D.energy_distance)


def _rand(seed, n, d, scale=1.0, shift=0.0):
  return (scale * np.random.default_rng(seed).normal(size=(n, d)) + shift).astype(
      np.float32)


def _brute_force_w2(x, y):
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  cost = ((x[:, None] - y[None]) ** 2).sum(-1)
  n = len(x)
  best = min(cost[np.arange(n), list(p)].mean()
             for p in itertools.permutations(range(n)))
  return np.sqrt(best)


# ---------------------------------------------------------------------------
# Exact W2.


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_w2_matches_brute_force(n):
  d = 3 if n == 5 else 2
  for seed in (n, 10 + n):
    x, y = _rand(seed, n, d), _rand(100 + seed, n, d, scale=2.0)
    np.testing.assert_allclose(_w2(x, y), _brute_force_w2(x, y), rtol=1e-5, atol=1e-6)


def test_w2_matches_scipy_assignment_n64():
  x, y = _rand(0, 64, 2), _rand(1, 64, 2, shift=1.0)
  cost = ((x[:, None].astype(np.float64) - y[None]) ** 2).sum(-1)
  i, j = optimize.linear_sum_assignment(cost)
  np.testing.assert_allclose(_w2(x, y), np.sqrt(cost[i, j].mean()), rtol=1e-5)


def test_w2_shift_permutation_symmetry():
  x = _rand(2, 64, 2)
  v = np.array([1.5, -2.0], np.float32)
  np.testing.assert_allclose(_w2(x, x + v), np.linalg.norm(v), rtol=1e-5)
  perm = np.random.default_rng(0).permutation(64)
  np.testing.assert_allclose(_w2(x, x[perm]), 0.0, atol=1e-6)
  y = _rand(3, 64, 2, scale=0.5)
  np.testing.assert_allclose(_w2(x, y), _w2(y, x), rtol=1e-5)


def test_w2_1d_is_sorted_matching():
  x, y = _rand(4, 64, 1), _rand(5, 64, 1, scale=3.0, shift=1.0)
  ref = np.sqrt(np.mean((np.sort(x[:, 0]) - np.sort(y[:, 0])) ** 2))
  np.testing.assert_allclose(_w2(x, y), ref, rtol=1e-5)


def test_w2_gaussian_samples_near_closed_form():
  # W2(N(m1, s1^2 I), N(m2, s2^2 I))^2 = ||m1 - m2||^2 + d (s1 - s2)^2 = 9 + 2 = 11.
  # Stated tolerance: 8% for n = 256 samples each in d = 2 (the empirical
  # estimate has O(n^-1/2)-ish fluctuations and a small positive bias).
  n = 256
  x = _rand(6, n, 2)
  y = _rand(7, n, 2, scale=2.0, shift=np.array([3.0, 0.0]))
  np.testing.assert_allclose(_w2(x, y), np.sqrt(11.0), rtol=0.08)


# ---------------------------------------------------------------------------
# Sliced W2.


def test_sliced_1d_equals_exact_w2():
  x, y = _rand(8, 64, 1), _rand(9, 64, 1, scale=2.0, shift=0.5)
  ref = np.sqrt(np.mean((np.sort(x[:, 0]) - np.sort(y[:, 0])) ** 2))
  np.testing.assert_allclose(_sw(jax.random.key(0), x, y, num_projections=4), ref,
                             rtol=1e-5)
  np.testing.assert_allclose(_sw(jax.random.key(0), x, y, num_projections=4),
                             _w2(x, y), rtol=1e-5)


def test_sliced_unequal_sizes_is_exact_in_1d():
  # y = z with every point repeated twice is the same measure as z.
  x, z = _rand(10, 5, 1), _rand(11, 5, 1, shift=1.0)
  y = np.concatenate([z, z[::-1]])
  ref = np.sqrt(np.mean((np.sort(x[:, 0]) - np.sort(z[:, 0])) ** 2))
  np.testing.assert_allclose(_sw(jax.random.key(1), x, y, num_projections=2), ref,
                             rtol=1e-5)
  # General n != m against a numpy quantile-function integral on a fine grid.
  a, b = _rand(12, 7, 1), _rand(13, 11, 1, scale=2.0)
  u = (np.arange(200_000) + 0.5) / 200_000
  qa = np.sort(a[:, 0])[np.minimum((u * 7).astype(int), 6)]
  qb = np.sort(b[:, 0])[np.minimum((u * 11).astype(int), 10)]
  np.testing.assert_allclose(_sw(jax.random.key(1), a, b, num_projections=2),
                             np.sqrt(np.mean((qa - qb) ** 2)), rtol=1e-4)


def test_sliced_bounds_and_shift():
  x, y = _rand(14, 64, 3), _rand(15, 64, 3, scale=1.5)
  sw = _sw(jax.random.key(2), x, y, num_projections=1024)
  assert 0 < sw <= _w2(x, y) + 1e-5            # projections are 1-Lipschitz
  # Shift by v: SW2^2 = E_theta <theta, v>^2 = ||v||^2 / d (Monte Carlo error of
  # the mean over 1024 directions ~1.4% after the square root; tolerance 5%).
  v = np.array([3.0, 0.0, 4.0], np.float32)
  sw_shift = _sw(jax.random.key(3), x, x + v, num_projections=1024)
  np.testing.assert_allclose(sw_shift, 5.0 / np.sqrt(3), rtol=0.05)


# ---------------------------------------------------------------------------
# MMD and energy distance.


def test_mmd_and_energy_zero_for_identical_positive_for_different():
  x = _rand(16, 200, 2)
  y = _rand(17, 200, 2, shift=1.0)
  for f in (_mmd, _energy):
    np.testing.assert_allclose(f(x, x), 0.0, atol=1e-6)
    assert f(x, y) > 1e-2
    np.testing.assert_allclose(f(x, y), f(y, x), rtol=1e-5)
  # Same distribution, different samples: much smaller than a shifted one.
  x2 = _rand(18, 200, 2)
  assert _mmd(x, x2) < 0.2 * _mmd(x, y)
  assert _energy(x, x2) < 0.2 * _energy(x, y)


def test_mmd_against_numpy_loops():
  x, y = _rand(19, 6, 2), _rand(20, 9, 2, shift=0.5)
  bws = (0.5, 1.0, 2.0)

  def k(a, b):
    return sum(np.exp(-np.sum((a - b) ** 2) / (2 * h * h)) for h in bws)

  kxx = np.array([[k(a, b) for b in x] for a in x])
  kyy = np.array([[k(a, b) for b in y] for a in y])
  kxy = np.array([[k(a, b) for b in y] for a in x])
  biased = kxx.mean() + kyy.mean() - 2 * kxy.mean()
  unbiased = ((kxx.sum() - np.trace(kxx)) / 30 + (kyy.sum() - np.trace(kyy)) / 72
              - 2 * kxy.mean())
  np.testing.assert_allclose(_mmd(x, y, bws), biased, rtol=1e-5)
  np.testing.assert_allclose(_mmd(x, y, bws, unbiased=True), unbiased, rtol=1e-5)
  # Bandwidths may also be an array (traced under jit).
  np.testing.assert_allclose(_mmd(x, y, jnp.asarray(bws)), biased, rtol=1e-5)


def test_energy_matches_scipy_1d_and_has_finite_gradients():
  x, y = _rand(21, 50, 1), _rand(22, 70, 1, shift=0.7)
  ref = stats.energy_distance(x[:, 0], y[:, 0]) ** 2
  np.testing.assert_allclose(_energy(x, y), ref, rtol=1e-4)
  g = jax.jit(jax.grad(D.energy_distance))(x, x)
  assert np.all(np.isfinite(g))


# ---------------------------------------------------------------------------
# Transformations and input checks.


class VariantTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_all_metrics(self):
    x, y = _rand(23, 8, 2), _rand(24, 8, 2, shift=1.0)

    @self.variant
    def all_metrics(key, x, y):
      return (D.wasserstein2(x, y), D.sliced_wasserstein(key, x, y, 16),
              D.mmd(x, y), D.energy_distance(x, y))

    out = all_metrics(jax.random.key(0), x, y)
    ref = (_w2(x, y), _sw(jax.random.key(0), x, y, num_projections=16), _mmd(x, y),
           _energy(x, y))
    chex.assert_trees_all_close(out, ref, rtol=1e-5)
    for v in out:
      assert v.dtype == jnp.float32 and v.shape == ()


def test_bad_inputs_name_the_argument():
  x = _rand(0, 5, 2)
  with pytest.raises(ValueError, match="y must have as many points"):
    D.wasserstein2(x, _rand(1, 6, 2))
  with pytest.raises(ValueError, match="y must have the same dimension"):
    D.wasserstein2(x, _rand(1, 5, 3))
  with pytest.raises(ValueError, match="x must have shape"):
    D.wasserstein2(x[:, 0], x[:, 0])
  for f in (D.mmd, D.energy_distance):
    with pytest.raises(ValueError, match="y must have the same dimension"):
      f(x, _rand(1, 5, 3))
    with pytest.raises(ValueError, match="y must have shape"):
      f(x, np.zeros((5, 2, 1), np.float32))
  with pytest.raises(ValueError, match="num_projections"):
    D.sliced_wasserstein(jax.random.key(0), x, x, num_projections=0)
  with pytest.raises(ValueError, match="bandwidths"):
    D.mmd(x, x, bandwidths=(1.0, -1.0))
  with pytest.raises(ValueError, match="bandwidths"):
    D.mmd(x, x, bandwidths=())
  with pytest.raises(ValueError, match="unbiased"):
    D.mmd(x[:1], x, unbiased=True)
