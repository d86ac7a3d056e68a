"""Tests for research/diffusion/likelihood.py: PF-ODE log-likelihood and bits/dim.

With the exact eps of a known density the probability-flow ODE likelihood must
reproduce that density. A Gaussian N(mu, s^2 I) is written as an 8-component
mixture of identical components so that it shares one compiled solver with the
8-mode ring (the mixture is a pytree argument of the jitted function).
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.data import gmm as G
from research.diffusion import exact
from research.diffusion import likelihood as L
from research.diffusion import schedules as S

SCHED = S.continuous_vp()
T_EPS = SCHED.t_min
MU, STD = np.array([0.5, -0.5]), 0.6
GAUSS = G.GaussianMixture(np.full(8, 1 / 8), np.tile(MU, (8, 1)), np.full(8, STD))
RING = G.ring(8, 1.5, 0.2)


@functools.partial(jax.jit, static_argnames=("hutchinson", "num_probes", "probe"))
def _log_likelihood(key, mix, x0, *, hutchinson, num_probes=1, probe="rademacher"):
  model = exact.mixture_model_fn(mix, SCHED)
  return L.log_likelihood(key, model, x0, SCHED, hutchinson=hutchinson,
                          num_probes=num_probes, probe=probe)


def _marginal(mix, x, t):
  return np.asarray(G.marginal_log_prob(mix, x, SCHED.alpha(t), SCHED.sigma(t)))


def test_gaussian_log_likelihood_in_closed_form():
  x0 = G.sample(jax.random.key(0), GAUSS, 16)
  closed_form = np.sum(-0.5 * ((np.asarray(x0) - MU) / STD) ** 2
                       - 0.5 * math.log(2 * math.pi * STD**2), axis=1)
  exact_lp, nfe = _log_likelihood(jax.random.key(1), GAUSS, x0, hutchinson=False)
  # Stated tolerance 0.02 nats: the ODE gives log p_{t_eps} (t_eps = 1e-3, here
  # within 6e-3 of log p_0) and the N(0, I) prior ignores the mean alpha(1) mu of
  # p_1 (an error ~ x_1 . alpha(1) mu, up to 0.012 here; 0 for the centred ring).
  np.testing.assert_allclose(exact_lp, closed_form, atol=0.02)
  np.testing.assert_allclose(exact_lp, _marginal(GAUSS, x0, T_EPS), atol=0.02)
  assert np.all(np.asarray(nfe) > 1) and np.all((np.asarray(nfe) - 1) % 6 == 0)
  # The Jacobian of an isotropic Gaussian's drift is a multiple of I, so each
  # Rademacher probe gives the exact trace; Gaussian probes are unbiased.
  rad, _ = _log_likelihood(jax.random.key(2), GAUSS, x0, hutchinson=True, num_probes=4)
  np.testing.assert_allclose(rad, exact_lp, atol=2e-3)
  gauss, _ = _log_likelihood(jax.random.key(3), GAUSS, x0, hutchinson=True, num_probes=4,
                             probe="gaussian")
  err = np.asarray(gauss) - np.asarray(exact_lp)
  assert abs(err.mean()) < 4 * err.std() / np.sqrt(len(err)) + 1e-3, err
  assert err.std() > 1e-3                                   # it is a random estimate


def test_mixture_log_likelihood_matches_gmm_log_prob():
  x0 = G.sample(jax.random.key(4), RING, 16)
  exact_lp, _ = _log_likelihood(jax.random.key(1), RING, x0, hutchinson=False)
  np.testing.assert_allclose(exact_lp, _marginal(RING, x0, T_EPS), atol=2e-3)
  np.testing.assert_allclose(exact_lp, np.asarray(G.log_prob(RING, x0)), atol=0.02)
  # Hutchinson (Rademacher, 4 probes): unbiased, per-example noise ~0.2 nats here.
  hutch, _ = _log_likelihood(jax.random.key(5), RING, x0, hutchinson=True, num_probes=4)
  err = np.asarray(hutch) - np.asarray(exact_lp)
  assert abs(err.mean()) < 4 * err.std() / np.sqrt(len(err)), err


def test_nfe_is_exact_and_result_does_not_depend_on_the_batch():
  count = [0]
  mix_model = exact.mixture_model_fn(RING, SCHED)

  def model(x, t):
    jax.debug.callback(lambda _: count.__setitem__(0, count[0] + 1), t[0])
    return mix_model(x, t)

  x0 = G.sample(jax.random.key(4), RING, 16)
  one = jax.jit(lambda k, x: L.log_likelihood(k, model, x, SCHED, hutchinson=False))
  lp, nfe = one(jax.random.key(1), x0[:1])
  jax.block_until_ready(lp)
  jax.effects_barrier()
  assert count[0] == int(nfe[0])                      # 1 + 6 (accepted + rejected steps)
  batch_lp, batch_nfe = _log_likelihood(jax.random.key(1), RING, x0, hutchinson=False)
  np.testing.assert_allclose(lp[0], batch_lp[0], atol=1e-5)
  assert int(nfe[0]) == int(batch_nfe[0])


def test_bits_per_dim():
  D = 3 * 32 * 32
  assert L.dequantization_offset(256) == pytest.approx(math.log(127.5))
  assert L.OFFSET_8BIT == pytest.approx(math.log(127.5))
  assert L.OFFSET_8BIT_256_BINS == pytest.approx(math.log(128.0))
  assert L.dequantization_offset(17, 0.0, 1.0) == pytest.approx(math.log(16.0))
  # A uniform density on [-1, 1]^D (log p = -D log 2) over n equal bins has n^-D
  # mass per bin: log2(n) bits per dimension.
  log_p = -D * math.log(2.0)
  np.testing.assert_allclose(L.bits_per_dim(log_p, D, L.OFFSET_8BIT_256_BINS), 8.0, rtol=1e-6)
  np.testing.assert_allclose(L.bits_per_dim(log_p, D, L.OFFSET_8BIT), math.log2(255),
                             rtol=1e-6)
  np.testing.assert_allclose(L.bits_per_dim(jnp.array([log_p, 0.0]), D, 0.0),
                             [1.0, 0.0], atol=1e-6)
  # bpd = -(log_p - D log 127.5) / (D log 2)
  np.testing.assert_allclose(L.bits_per_dim(-5000.0, D),
                             -(-5000.0 - D * math.log(127.5)) / (D * math.log(2)), rtol=1e-6)
  with pytest.raises(ValueError, match="num_dims"):
    L.bits_per_dim(0.0, 0)


def test_invalid_arguments_are_refused():
  model = exact.mixture_model_fn(RING, SCHED)
  x0, key = jnp.zeros((2, 2)), jax.random.key(0)
  for kwargs, name in (({"solver": "rk4"}, "solver"), ({"num_probes": 0}, "num_probes"),
                       ({"probe": "sphere"}, "probe"), ({"t_eps": 0.0}, "t_eps"),
                       ({"rtol": 0.0}, "rtol"), ({"prediction": "noise"}, "prediction")):
    with pytest.raises(ValueError, match=name):
      L.log_likelihood(key, model, x0, SCHED, **kwargs)
