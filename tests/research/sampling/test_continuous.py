"""Tests for research.sampling.continuous (KS tests with fixed keys, p > 0.01)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from research.sampling import continuous

N = 20_000
P_MIN = 0.01


def _key(i=0):
  return jax.random.key(i)


# ---------------------------------------------------------------- distributions
def test_uniform_ks_and_range():
  x = np.asarray(continuous.uniform(_key(1), (N,), low=-2., high=3.))
  assert x.dtype == np.float32
  assert x.min() >= -2. and x.max() < 3.
  assert stats.kstest(x, "uniform", args=(-2., 5.)).pvalue > P_MIN


def test_normal_ks():
  x = np.asarray(continuous.normal(_key(2), (N,), mean=1.5, std=0.5))
  assert x.dtype == np.float32
  assert stats.kstest(x, "norm", args=(1.5, 0.5)).pvalue > P_MIN


@pytest.mark.parametrize("seed", [3, 4])
def test_box_muller_ks_standard_normal(seed):
  x = np.asarray(continuous.box_muller(_key(seed), (N,)))
  assert x.dtype == np.float32
  assert np.all(np.isfinite(x))
  assert stats.kstest(x, "norm").pvalue > P_MIN
  # Both halves (the cos and the sin outputs) are standard normal and uncorrelated.
  a, b = x[: N // 2], x[N // 2:]
  assert stats.kstest(a, "norm").pvalue > P_MIN
  assert stats.kstest(b, "norm").pvalue > P_MIN
  assert abs(np.corrcoef(a, b)[0, 1]) < 4. / np.sqrt(N // 2)


def test_box_muller_is_not_jax_normal():
  # It must be the real transform, not a relabelled jax.random.normal.
  x = continuous.box_muller(_key(5), (10,))
  assert not np.allclose(x, jax.random.normal(_key(5), (10,)))


@pytest.mark.parametrize("shape", [(), (1,), (7,), (3, 5), (2, 3, 3)])
def test_box_muller_shapes_including_odd_sizes(shape):
  x = continuous.box_muller(_key(6), shape)
  assert x.shape == shape
  assert np.all(np.isfinite(x))
  if x.size > 1:
    assert np.unique(np.asarray(x)).size == x.size


def test_box_muller_transform_formula_and_boundaries():
  u1 = jnp.array([0., 1e-45, 0.25, 1.])
  u2 = jnp.array([0.1, 0.5, 0.125, 0.75])
  z1, z2 = continuous.box_muller_transform(u1, u2)
  assert np.all(np.isfinite(z1)) and np.all(np.isfinite(z2))
  r = np.sqrt(-2. * np.log(0.25))
  np.testing.assert_allclose(z1[2], r * np.cos(2 * np.pi * 0.125), rtol=1e-6)
  np.testing.assert_allclose(z2[2], r * np.sin(2 * np.pi * 0.125), rtol=1e-6)
  # u1 = 1 -> radius 0; u1 = 0 -> large but finite radius.
  assert z1[3] == 0. and z2[3] == 0.
  radius0 = np.hypot(z1[0], z2[0])
  assert 10. < radius0 < 14.


def test_inverse_transform_exponential_ks():
  rate = 2.
  x = np.asarray(continuous.inverse_transform(
      _key(7), lambda u: -jnp.log1p(-u) / rate, (N,)))
  assert np.all(np.isfinite(x)) and x.min() > 0
  assert stats.kstest(x, "expon", args=(0., 1. / rate)).pvalue > P_MIN


def test_inverse_transform_uniform_is_open_interval():
  u = np.asarray(continuous.inverse_transform(_key(8), lambda u: u, (N,)))
  assert u.min() > 0. and u.max() < 1.
  # log at both ends stays finite, also at the clipping boundaries.
  edge = continuous.open_uniform(_key(9), (N,))
  assert np.all(np.isfinite(np.log(edge))) and np.all(np.isfinite(np.log1p(-edge)))


def test_mvn_cholesky_moments():
  mean = jnp.array([1., -2., 0.5])
  a = jnp.array([[1., 0., 0.], [0.8, 0.6, 0.], [-0.3, 0.4, 0.5]])
  cov = a @ a.T
  x = np.asarray(continuous.mvn_cholesky(_key(10), mean, cov, (N,)))
  assert x.shape == (N, 3) and x.dtype == np.float32
  se = np.sqrt(np.diag(cov) / N)
  assert np.all(np.abs(x.mean(0) - mean) < 4. * se)
  np.testing.assert_allclose(np.cov(x.T), cov, atol=0.05)
  # Each marginal is normal with the right variance.
  for i in range(3):
    assert stats.kstest(x[:, i], "norm",
                        args=(mean[i], np.sqrt(cov[i, i]))).pvalue > P_MIN


def test_mvn_cholesky_shapes():
  cov = jnp.eye(2)
  assert continuous.mvn_cholesky(_key(0), jnp.zeros(2), cov).shape == (2,)
  assert continuous.mvn_cholesky(_key(0), jnp.zeros(2), cov, (4, 5)).shape == (4, 5, 2)
  batched = continuous.mvn_cholesky(_key(0), jnp.zeros((3, 2)), cov, (4,))
  assert batched.shape == (4, 3, 2)


# ---------------------------------------------------------------- jit and vmap
def test_jit_matches_eager():
  key = _key(11)
  cov = jnp.array([[2., 0.3], [0.3, 1.]])
  cases = [
      (lambda k: continuous.uniform(k, (5,), -1., 1.), None),
      (lambda k: continuous.normal(k, (5,), 2., 3.), None),
      (lambda k: continuous.box_muller(k, (3, 3)), None),
      (lambda k: continuous.inverse_transform(k, lambda u: u ** 2, (4,)), None),
      (lambda k: continuous.mvn_cholesky(k, jnp.ones(2), cov, (3,)), None),
  ]
  for fn, _ in cases:
    np.testing.assert_allclose(jax.jit(fn)(key), fn(key), rtol=1e-6, atol=1e-6)


def test_mvn_cholesky_under_jit_with_traced_cov():
  cov = jnp.array([[2., 0.3], [0.3, 1.]])
  fn = jax.jit(lambda k, c: continuous.mvn_cholesky(k, jnp.zeros(2), c, (3,)))
  np.testing.assert_allclose(
      fn(_key(12), cov), continuous.mvn_cholesky(_key(12), jnp.zeros(2), cov, (3,)),
      rtol=1e-6, atol=1e-6)


def test_vmap_over_keys_matches_loop():
  keys = jax.random.split(_key(13), 4)
  fns = [lambda k: continuous.box_muller(k, (3,)),
         lambda k: continuous.uniform(k, (3,)),
         lambda k: continuous.mvn_cholesky(k, jnp.zeros(2), jnp.eye(2))]
  for fn in fns:
    batched = jax.vmap(fn)(keys)
    looped = jnp.stack([fn(k) for k in keys])
    np.testing.assert_allclose(batched, looped, rtol=1e-6, atol=1e-6)
    assert np.unique(np.asarray(batched[:, 0])).size == 4  # different keys differ


def test_same_key_same_sample():
  a = continuous.box_muller(_key(14), (6,))
  b = continuous.box_muller(_key(14), (6,))
  np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- bad inputs
def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="low < high"):
    continuous.uniform(_key(), (3,), low=1., high=1.)
  with pytest.raises(ValueError, match="std"):
    continuous.normal(_key(), (3,), std=-1.)
  with pytest.raises(ValueError, match="shape"):
    continuous.box_muller(_key(), (-1, 2))
  with pytest.raises(ValueError, match="icdf"):
    continuous.inverse_transform(_key(), 3., (2,))


def test_mvn_cholesky_refuses_bad_covariance():
  with pytest.raises(ValueError, match="positive definite"):
    continuous.mvn_cholesky(_key(), jnp.zeros(2), jnp.array([[1., 2.], [2., 1.]]))
  with pytest.raises(ValueError, match="positive definite"):   # singular (PSD only)
    continuous.mvn_cholesky(_key(), jnp.zeros(2), jnp.array([[1., 1.], [1., 1.]]))
  with pytest.raises(ValueError, match="symmetric"):
    continuous.mvn_cholesky(_key(), jnp.zeros(2), jnp.array([[1., 0.5], [0., 1.]]))
  with pytest.raises(ValueError, match="square"):
    continuous.mvn_cholesky(_key(), jnp.zeros(2), jnp.ones((2, 3)))
  with pytest.raises(ValueError, match="does not match mean"):
    continuous.mvn_cholesky(_key(), jnp.zeros(3), jnp.eye(2))
  with pytest.raises(ValueError, match="mean"):
    continuous.mvn_cholesky(_key(), 0., jnp.eye(1))
