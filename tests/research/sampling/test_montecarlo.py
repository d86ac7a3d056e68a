"""Tests for research.sampling.montecarlo: MC estimates and gradient estimators.

Target: L(mu, log_var) = E_{z ~ N(mu, exp(log_var))}[z^2] = mu^2 + exp(log_var),
so dL/dmu = 2 mu and dL/dlog_var = exp(log_var). Unbiasedness is checked as
|estimate - truth| < 4 standard errors with n = 20000 fixed-key samples.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.sampling import montecarlo

N = 20_000
MU = 0.5
LOG_VAR = float(np.log(0.8))
TRUE_GRAD = (2. * MU, float(np.exp(LOG_VAR)))


def _key(i=0):
  return jax.random.key(i)


def _square(z):
  return z ** 2


def _normal_sampler(key, n):
  return jax.random.normal(key, (n,))


# ---------------------------------------------------------------- mc_estimate
def test_mc_estimate_value_and_standard_error():
  mean, se = montecarlo.mc_estimate(_key(1), _square, _normal_sampler, N)
  values = np.asarray(_normal_sampler(_key(1), N), np.float64) ** 2
  np.testing.assert_allclose(mean, values.mean(), rtol=1e-5)
  np.testing.assert_allclose(se, values.std(ddof=1) / np.sqrt(N), rtol=1e-4)
  np.testing.assert_allclose(se, np.sqrt(2. / N), rtol=0.05)   # Var[z^2] = 2
  assert abs(mean - 1.) < 4. * se


def test_mc_estimate_vector_valued_and_jit():
  sampler = lambda k, n: jax.random.normal(k, (n, 2)) * jnp.array([1., 2.])
  f = lambda x: x ** 2                                         # (n, 2) -> (n, 2)
  mean, se = montecarlo.mc_estimate(_key(2), f, sampler, N)
  assert mean.shape == (2,) and se.shape == (2,)
  assert np.all(np.abs(mean - np.array([1., 4.])) < 4. * se)
  jitted = jax.jit(lambda k: montecarlo.mc_estimate(k, f, sampler, N))(_key(2))
  np.testing.assert_allclose(jitted[0], mean, rtol=1e-5)
  np.testing.assert_allclose(jitted[1], se, rtol=1e-4)


def test_mc_estimate_standard_error_shrinks_like_one_over_sqrt_n():
  _, se_small = montecarlo.mc_estimate(_key(3), _square, _normal_sampler, 400)
  _, se_large = montecarlo.mc_estimate(_key(3), _square, _normal_sampler, 40_000)
  np.testing.assert_allclose(se_small / se_large, 10., rtol=0.2)


@pytest.mark.parametrize("n", [0, -3, 2.5, True, None])
def test_mc_estimate_bad_n(n):
  with pytest.raises(ValueError, match="n must be"):
    montecarlo.mc_estimate(_key(), _square, _normal_sampler, n)


def test_mc_estimate_shape_mismatch():
  with pytest.raises(ValueError, match="f\\(samples\\)"):
    montecarlo.mc_estimate(_key(), lambda x: jnp.sum(x), _normal_sampler, 10)
  with pytest.raises(ValueError, match="sampler"):
    montecarlo.mc_estimate(_key(), _square, lambda k, n: jax.random.normal(k, (3,)), 10)


# ---------------------------------------------------------------- gradients
ESTIMATORS = {
    "reparam": montecarlo.reparam_gradient,
    "score": montecarlo.score_function_gradient,
    "score_const_baseline": functools.partial(montecarlo.score_function_gradient,
                                              baseline=1.),
    "score_leave_one_out": functools.partial(montecarlo.score_function_gradient,
                                             baseline="leave_one_out"),
}


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_gradient_estimators_are_unbiased(name):
  terms = ESTIMATORS[name](_key(4), _square, MU, LOG_VAR, N)
  assert terms.mu.shape == (N,) and terms.log_var.shape == (N,)
  for field, truth in zip(terms, TRUE_GRAD):
    field = np.asarray(field, np.float64)
    se = field.std(ddof=1) / np.sqrt(N)
    assert abs(field.mean() - truth) < 4. * se, (name, field.mean(), truth, se)


@pytest.mark.parametrize("name", ["reparam", "score_leave_one_out"])
def test_gradient_estimators_vector_parameters(name):
  mu = jnp.array([0.5, -1., 2.])
  log_var = jnp.array([0., -0.5, 0.3])
  f = lambda z: jnp.sum(z ** 2, axis=-1)
  terms = ESTIMATORS[name](_key(5), f, mu, log_var, N)
  assert terms.mu.shape == (N, 3)
  for field, truth in zip(terms, (2. * mu, jnp.exp(log_var))):
    field = np.asarray(field, np.float64)
    se = field.std(0, ddof=1) / np.sqrt(N)
    assert np.all(np.abs(field.mean(0) - truth) < 4. * se)


def test_reparam_has_lower_variance_than_score_function():
  reparam = montecarlo.reparam_gradient(_key(6), _square, MU, LOG_VAR, N)
  for name in ("score", "score_leave_one_out"):
    score = ESTIMATORS[name](_key(6), _square, MU, LOG_VAR, N)
    for r, s in zip(reparam, score):
      assert np.var(r) < 0.5 * np.var(s), name
  # The reparameterized per-sample variance for z^2 is known: Var[2 z] = 4 sigma^2.
  np.testing.assert_allclose(np.var(reparam.mu), 4. * np.exp(LOG_VAR), rtol=0.05)


def test_gradient_variance_scales_as_one_over_n():
  variances = {}
  for n in (10, 100):
    mean, var = montecarlo.gradient_variance(
        _key(7), montecarlo.reparam_gradient, _square, jnp.array(MU),
        jnp.array(LOG_VAR), n, num_repeats=400)
    variances[n] = var
    assert abs(mean.mu - TRUE_GRAD[0]) < 4. * np.sqrt(var.mu / 400)
  np.testing.assert_allclose(variances[10].mu / variances[100].mu, 10., rtol=0.35)
  np.testing.assert_allclose(variances[100].mu, 4. * np.exp(LOG_VAR) / 100, rtol=0.25)
  _, score_var = montecarlo.gradient_variance(
      _key(7), ESTIMATORS["score_leave_one_out"], _square, jnp.array(MU),
      jnp.array(LOG_VAR), 100, num_repeats=400)
  assert variances[100].mu < score_var.mu and variances[100].log_var < score_var.log_var


def test_gradient_estimators_jit_matches_eager():
  for estimator in ESTIMATORS.values():
    eager = estimator(_key(8), _square, MU, LOG_VAR, 16)
    jitted = jax.jit(lambda k, m, lv: estimator(k, _square, m, lv, 16))(_key(8), MU, LOG_VAR)
    for a, b in zip(eager, jitted):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_gradient_bad_arguments():
  with pytest.raises(ValueError, match="n must be"):
    montecarlo.reparam_gradient(_key(), _square, MU, LOG_VAR, 0)
  with pytest.raises(ValueError, match="n must be"):
    montecarlo.score_function_gradient(_key(), _square, MU, LOG_VAR, -1)
  with pytest.raises(ValueError, match="baseline"):
    montecarlo.score_function_gradient(_key(), _square, MU, LOG_VAR, 10, baseline="mean")
  with pytest.raises(ValueError, match="baseline"):
    montecarlo.score_function_gradient(_key(), _square, MU, LOG_VAR, 1,
                                       baseline="leave_one_out")
  with pytest.raises(ValueError, match="log_var"):
    montecarlo.reparam_gradient(_key(), _square, jnp.zeros(2), jnp.zeros(3), 10)
  with pytest.raises(ValueError, match="f must map"):
    montecarlo.reparam_gradient(_key(), lambda z: jnp.sum(z), MU, LOG_VAR, 10)
  with pytest.raises(ValueError, match="num_repeats"):
    montecarlo.gradient_variance(_key(), montecarlo.reparam_gradient, _square, MU,
                                 LOG_VAR, 10, num_repeats=1)
