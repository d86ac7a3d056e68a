"""Fréchet distance: closed forms, scipy.linalg.sqrtm reference, invariances, bad input."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import linalg

from research.metrics import frechet as F


def _spd(rng, d, scale=1.0):
  a = rng.normal(size=(d, d))
  return scale * (a @ a.T / d + 0.1 * np.eye(d))


def _reference_fd(mu1, s1, mu2, s2):
  """float64 numpy/scipy FD: |dmu|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2))."""
  covmean = linalg.sqrtm(s1 @ s2).real
  return float(np.sum((mu1 - mu2)**2) + np.trace(s1 + s2 - 2.0 * covmean))


def test_gaussian_statistics_unbiased_covariance():
  x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
  mu, sigma = F.gaussian_statistics(x)
  np.testing.assert_allclose(mu, x.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(sigma, np.cov(x.T, ddof=1), rtol=1e-4, atol=1e-6)


def test_identical_gaussians_and_feature_sets_give_zero():
  rng = np.random.default_rng(1)
  mu, sigma = rng.normal(size=8), _spd(rng, 8)
  assert float(F.frechet_distance(mu, sigma, mu, sigma)) == pytest.approx(0.0, abs=1e-4)
  x = rng.normal(size=(300, 16)).astype(np.float32)
  assert float(F.frechet_distance_from_features(x, x)) == pytest.approx(0.0, abs=1e-4)
  assert float(F.frechet_distance_from_features(x, x[::-1])) == pytest.approx(0.0, abs=1e-4)


def test_commuting_diagonal_covariances_closed_form():
  a = np.array([0.5, 1.0, 2.0, 4.0, 9.0])
  b = np.array([2.0, 1.0, 0.5, 1.0, 4.0])
  mu1, mu2 = np.arange(5.0), np.arange(5.0)[::-1]
  expected = np.sum((mu1 - mu2)**2) + np.sum((np.sqrt(a) - np.sqrt(b))**2)
  got = F.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_one_dimensional_case():
  # W2^2 between N(m1, s1^2) and N(m2, s2^2) = (m1 - m2)^2 + (s1 - s2)^2.
  got = F.frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-0.5]),
                           np.array([[0.25]]))
  np.testing.assert_allclose(got, 1.5**2 + (2.0 - 0.5)**2, rtol=1e-6)


@pytest.mark.parametrize("d", [3, 16, 64])
def test_matches_scipy_sqrtm_on_random_spd(d):
  rng = np.random.default_rng(d)
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  s1, s2 = _spd(rng, d), _spd(rng, d, scale=2.0)
  expected = _reference_fd(mu1, s1, mu2, s2)
  np.testing.assert_allclose(F.frechet_distance(mu1, s1, mu2, s2), expected, rtol=1e-3)


@pytest.mark.parametrize("n1, n2, d", [(400, 300, 8), (40, 50, 64)])  # second: rank-deficient
def test_from_features_matches_statistics_path_and_scipy(n1, n2, d):
  rng = np.random.default_rng(n1)
  x = (rng.normal(size=(n1, d)) @ rng.normal(size=(d, d)) * 0.3).astype(np.float32)
  y = (1.2 * rng.normal(size=(n2, d)) + 0.1).astype(np.float32)
  x64, y64 = x.astype(np.float64), y.astype(np.float64)
  expected = _reference_fd(x64.mean(0), np.cov(x64.T), y64.mean(0), np.cov(y64.T))
  np.testing.assert_allclose(F.frechet_distance_from_features(x, y), expected, rtol=1e-3)
  via_stats = F.frechet_distance(*F.gaussian_statistics(x), *F.gaussian_statistics(y))
  np.testing.assert_allclose(via_stats, expected, rtol=1e-3)


def test_symmetry_and_rotation_invariance():
  rng = np.random.default_rng(3)
  d = 12
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  s1, s2 = _spd(rng, d), _spd(rng, d, scale=0.5)
  fd = float(F.frechet_distance(mu1, s1, mu2, s2))
  assert fd > 1.0
  np.testing.assert_allclose(F.frechet_distance(mu2, s2, mu1, s1), fd, rtol=1e-4)
  q, _ = np.linalg.qr(rng.normal(size=(d, d)))
  rotated = F.frechet_distance(q @ mu1, q @ s1 @ q.T, q @ mu2, q @ s2 @ q.T)
  np.testing.assert_allclose(rotated, fd, rtol=1e-4)
  x = rng.normal(size=(200, d)).astype(np.float32)
  y = (rng.normal(size=(150, d)) + 0.5).astype(np.float32)
  fd_features = float(F.frechet_distance_from_features(x, y))
  np.testing.assert_allclose(F.frechet_distance_from_features(y, x), fd_features, rtol=1e-4)
  np.testing.assert_allclose(F.frechet_distance_from_features(x @ q.T, y @ q.T), fd_features,
                             rtol=1e-4)


def test_translation_adds_squared_shift_only():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(500, 6)).astype(np.float32)
  shift = np.array([1.0, -2.0, 0.0, 0.5, 0.0, 3.0], np.float32)
  np.testing.assert_allclose(F.frechet_distance_from_features(x, x + shift), np.sum(shift**2),
                             rtol=1e-4)


def test_negative_roundoff_eigenvalues_are_clamped():
  # A rank-one covariance whose float32 eigendecomposition leaves ~ -1e-7 eigenvalues.
  v = np.linspace(-1.0, 1.0, 10)
  sigma = np.outer(v, v)
  got = F.frechet_distance(np.zeros(10), sigma, np.zeros(10), sigma)
  assert np.isfinite(got) and float(got) == pytest.approx(0.0, abs=1e-4)
  # rank one vs scaled rank one: (sqrt(a) - sqrt(b))^2 |v|^2.
  got = F.frechet_distance(np.zeros(10), sigma, np.zeros(10), 4.0 * sigma)
  np.testing.assert_allclose(got, np.sum(v**2) * (1.0 - 2.0)**2, rtol=1e-4)


def test_jit_and_vmap():
  rng = np.random.default_rng(5)
  mus = rng.normal(size=(3, 4)).astype(np.float32)
  sigmas = np.stack([_spd(rng, 4) for _ in range(3)]).astype(np.float32)
  batched = jax.vmap(F.frechet_distance, in_axes=(0, 0, None, None))(mus, sigmas, mus[0], sigmas[0])
  loop = [F.frechet_distance(mus[i], sigmas[i], mus[0], sigmas[0]) for i in range(3)]
  np.testing.assert_allclose(batched, loop, rtol=1e-5, atol=1e-5)
  assert float(batched[0]) == pytest.approx(0.0, abs=1e-4)
  x = jnp.asarray(rng.normal(size=(64, 4)), jnp.float32)
  np.testing.assert_allclose(jax.jit(F.frechet_distance_from_features)(x, x + 1.0), 4.0, rtol=1e-4)


def test_bad_shapes_raise():
  with pytest.raises(ValueError, match="features"):
    F.gaussian_statistics(np.zeros((1, 3)))
  with pytest.raises(ValueError, match="features"):
    F.gaussian_statistics(np.zeros(5))
  with pytest.raises(ValueError, match="mu1"):
    F.frechet_distance(np.zeros((2, 2)), np.eye(2), np.zeros(2), np.eye(2))
  with pytest.raises(ValueError, match="mu2"):
    F.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(2))
  with pytest.raises(ValueError, match="sigma1"):
    F.frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))
  with pytest.raises(ValueError, match="sigma2"):
    F.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.ones((2, 3)))
  with pytest.raises(ValueError, match="features2"):
    F.frechet_distance_from_features(np.zeros((5, 3)), np.zeros((5, 4)))
  with pytest.raises(ValueError, match="features1"):
    F.frechet_distance_from_features(np.zeros((1, 3)), np.zeros((5, 3)))
