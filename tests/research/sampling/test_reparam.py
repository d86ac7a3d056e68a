"""Tests for research.sampling.reparam: distributions (KS, p > 0.01) and pathwise gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from research.sampling import reparam

N = 20_000
P_MIN = 0.01


def _key(i=0):
  return jax.random.key(i)


def test_rsample_normal_distribution():
  z = np.asarray(reparam.rsample_normal(_key(1), jnp.full((N,), 1.5), jnp.log(0.25)))
  assert z.dtype == np.float32
  assert stats.kstest(z, "norm", args=(1.5, 0.5)).pvalue > P_MIN


def test_rsample_normal_gradients():
  mu = jnp.array([0.3, -1.2, 2.0])
  log_var = jnp.array([0.0, -1.0, 0.7])
  key = _key(2)
  z = reparam.rsample_normal(key, mu, log_var)
  eps = (z - mu) / jnp.exp(0.5 * log_var)
  jac_mu, jac_lv = jax.jacobian(reparam.rsample_normal, argnums=(1, 2))(key, mu, log_var)
  np.testing.assert_allclose(jac_mu, np.eye(3), atol=1e-6)
  np.testing.assert_allclose(jac_lv, np.diag(0.5 * np.exp(0.5 * log_var) * eps),
                             rtol=1e-5, atol=1e-6)
  assert np.all(np.abs(np.diag(jac_lv)) > 0)


def test_sample_normal_same_value_no_gradient():
  mu, log_var, key = jnp.array([0.3, -1.2]), jnp.array([0.1, 0.4]), _key(3)
  np.testing.assert_array_equal(reparam.sample_normal(key, mu, log_var),
                                reparam.rsample_normal(key, mu, log_var))
  g_mu, g_lv = jax.grad(lambda m, lv: jnp.sum(reparam.sample_normal(key, m, lv) ** 2),
                        argnums=(0, 1))(mu, log_var)
  np.testing.assert_array_equal(g_mu, 0.)
  np.testing.assert_array_equal(g_lv, 0.)


def test_rsample_normal_broadcasting():
  z = reparam.rsample_normal(_key(4), jnp.zeros((4, 1)), jnp.zeros((3,)))
  assert z.shape == (4, 3)
  with pytest.raises(ValueError, match="log_var"):
    reparam.rsample_normal(_key(4), jnp.zeros((4,)), jnp.zeros((3,)))


@pytest.mark.parametrize("name,dist", [
    ("gumbel", stats.gumbel_r(loc=0.5, scale=2.)),
    ("logistic", stats.logistic(loc=0.5, scale=2.)),
])
def test_location_scale_families_ks(name, dist):
  sampler = getattr(reparam, f"rsample_{name}")
  z = np.asarray(sampler(_key(5), jnp.full((N,), 0.5), 2.))
  assert np.all(np.isfinite(z))
  assert stats.kstest(z, dist.cdf).pvalue > P_MIN


def test_rsample_exponential_ks():
  z = np.asarray(reparam.rsample_exponential(_key(6), jnp.full((N,), 3.)))
  assert np.all(np.isfinite(z)) and z.min() > 0
  assert stats.kstest(z, "expon", args=(0., 1. / 3.)).pvalue > P_MIN


@pytest.mark.parametrize("name", ["gumbel", "logistic"])
def test_location_scale_gradients(name):
  sampler = getattr(reparam, f"rsample_{name}")
  key, loc, scale = _key(7), jnp.array([0.5, -1.]), jnp.array([2., 0.3])
  z = sampler(key, loc, scale)
  jac_loc, jac_scale = jax.jacobian(sampler, argnums=(1, 2))(key, loc, scale)
  np.testing.assert_allclose(jac_loc, np.eye(2), atol=1e-6)
  np.testing.assert_allclose(jac_scale, np.diag((z - loc) / scale), rtol=1e-5, atol=1e-6)


def test_exponential_gradient():
  key, rate = _key(8), jnp.array([0.5, 2., 4.])
  z = reparam.rsample_exponential(key, rate)
  jac = jax.jacobian(reparam.rsample_exponential, argnums=1)(key, rate)
  np.testing.assert_allclose(jac, np.diag(-z / rate), rtol=1e-5)


def test_jit_and_vmap_match_eager():
  key, mu, lv = _key(9), jnp.array([0.2, 0.4]), jnp.array([-0.5, 0.5])
  fns = [lambda k: reparam.rsample_normal(k, mu, lv),
         lambda k: reparam.sample_normal(k, mu, lv),
         lambda k: reparam.rsample_gumbel(k, mu, 1.5),
         lambda k: reparam.rsample_logistic(k, mu, 1.5),
         lambda k: reparam.rsample_exponential(k, jnp.exp(lv))]
  keys = jax.random.split(key, 3)
  for fn in fns:
    np.testing.assert_allclose(jax.jit(fn)(key), fn(key), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jax.vmap(fn)(keys), jnp.stack([fn(k) for k in keys]),
                               rtol=1e-6, atol=1e-6)


def test_bad_parameters_raise():
  with pytest.raises(ValueError, match="scale"):
    reparam.rsample_gumbel(_key(), 0., 0.)
  with pytest.raises(ValueError, match="scale"):
    reparam.rsample_logistic(_key(), 0., jnp.array([1., -1.]))
  with pytest.raises(ValueError, match="rate"):
    reparam.rsample_exponential(_key(), jnp.array([1., 0.]))
  with pytest.raises(ValueError, match="scale"):
    reparam.rsample_gumbel(_key(), jnp.zeros(3), jnp.ones(2))
