"""Tests for research/flow/likelihood.py: the flow-matching ODE log-likelihood.

Two velocity fields with a known density at t = 1: a constant linear field v = A x
(x_1 = e^A x_0, so log p_1(x) = log N(e^-A x; 0, I) - tr A) and the exact marginal
velocity of the independent-coupling linear path from N(0, I) to Gaussian data
N(m, S) (x_t = (1 - t) x_0 + t x_1, whose density at t = 1 is N(m, S)).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.linalg import expm
from jax.scipy.stats import multivariate_normal

from research.flow import likelihood as L

A = jnp.array([[-0.3, 0.8, 0.0], [-0.5, 0.2, 0.4], [0.1, 0.0, 0.5]], jnp.float32)
M = jnp.array([0.5, -1.0, 2.0], jnp.float32)
_B = jnp.array([[1.2, 0.0, 0.0], [0.6, 0.5, 0.0], [-0.3, 0.4, 0.8]], jnp.float32)
S = _B @ _B.T


def linear_velocity(x, t):
  del t
  return x @ A.T


def gaussian_path_velocity(x, t):
  """E[x_1 - x_0 | x_t = x] for x_0 ~ N(0, I), x_1 ~ N(M, S): M + (t S - (1 - t) I)
  ((1 - t)^2 I + t^2 S)^-1 (x - t M) (the covariances commute)."""
  eye = jnp.eye(3, dtype=jnp.float32)
  cov = (1 - t) ** 2 * eye + t ** 2 * S
  half_dcov = t * S - (1 - t) * eye
  return M + jnp.linalg.solve(cov, (x - t * M).T).T @ half_dcov.T


@functools.partial(jax.jit, static_argnames=("field", "hutchinson", "num_probes", "probe"))
def _ll(key, x, *, field, hutchinson, num_probes=1, probe="rademacher"):
  fn = {"linear": linear_velocity, "gaussian": gaussian_path_velocity}[field]
  return L.log_likelihood(key, fn, x, hutchinson=hutchinson, num_probes=num_probes, probe=probe)


def test_linear_field_matches_the_closed_form_and_counts_evaluations():
  x1 = jax.random.normal(jax.random.key(0), (16, 3)) * 2.0
  x0 = x1 @ expm(-A).T
  closed = np.asarray(jnp.sum(jax.scipy.stats.norm.logpdf(x0), axis=1) - jnp.trace(A))
  lp, nfe = _ll(jax.random.key(1), x1, field="linear", hutchinson=False)
  np.testing.assert_allclose(lp, closed, atol=2e-4)
  assert np.all((np.asarray(nfe) - 1) % 6 == 0) and np.all(np.asarray(nfe) > 1)
  # One example alone gives what it gets inside the batch (per-example adaptive steps).
  one, one_nfe = _ll(jax.random.key(1), x1[3:4], field="linear", hutchinson=False)
  np.testing.assert_allclose(one[0], lp[3], atol=1e-5)
  assert int(one_nfe[0]) == int(nfe[3])


def test_gaussian_path_gives_the_data_density_exactly_and_hutchinson_unbiased():
  x1 = M + jax.random.normal(jax.random.key(2), (64, 3)) @ _B.T
  closed = np.asarray(multivariate_normal.logpdf(x1, M, S))
  exact, _ = _ll(jax.random.key(3), x1, field="gaussian", hutchinson=False)
  np.testing.assert_allclose(exact, closed, atol=1e-3)
  # The Jacobian is not diagonal, so Rademacher probes give a random, unbiased estimate.
  for probe in ("rademacher", "gaussian"):
    hutch, _ = _ll(jax.random.key(4), x1, field="gaussian", hutchinson=True, num_probes=2,
                   probe=probe)
    err = np.asarray(hutch) - np.asarray(exact)
    assert err.std() > 1e-3, probe
    assert abs(err.mean()) < 4 * err.std() / np.sqrt(err.size), (probe, err.mean(), err.std())


def test_invalid_arguments_are_refused():
  x, key = jnp.zeros((2, 3)), jax.random.key(0)
  for kwargs, name in (({"solver": "rk4"}, "solver"), ({"num_probes": 0}, "num_probes"),
                       ({"probe": "sphere"}, "probe"), ({"rtol": 0.0}, "rtol"),
                       ({"max_steps": 0}, "max_steps"), ({"t_data": 0.0}, "t_data")):
    with pytest.raises(ValueError, match=name):
      L.log_likelihood(key, linear_velocity, x, **kwargs)
  with pytest.raises(ValueError, match="x1 must be a float array"):
    L.log_likelihood(key, linear_velocity, jnp.zeros((2, 3), jnp.int32))
