"""Tests for research/metrics/likelihood.py: uniform dequantization and its bits/dim."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.metrics import likelihood as L


def test_dequantize_spreads_each_level_over_its_bin():
  x = jnp.tile(jnp.arange(17), 200).reshape(200, 17)
  y = np.asarray(L.dequantize(jax.random.key(0), x, 17))
  assert y.dtype == np.float32 and y.shape == x.shape
  assert np.all(np.floor(y * 17) == np.asarray(x))          # y in [x / 17, (x + 1) / 17)
  # u ~ U(0, 1): mean 1/2, variance 1/12 per element
  u = y * 17 - np.asarray(x)
  assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
  floats = np.asarray(L.dequantize(jax.random.key(0), x.astype(jnp.float32), 17))
  np.testing.assert_array_equal(floats, y)                  # whole-number floats are accepted
  traced = jax.jit(lambda k, v: L.dequantize(k, v, 17))(jax.random.key(0), x)
  np.testing.assert_array_equal(np.asarray(traced), y)
  # example b's noise comes from fold_in(key, b): a prefix of the batch keeps its noise
  np.testing.assert_array_equal(np.asarray(L.dequantize(jax.random.key(0), x[:7], 17)), y[:7])
  with pytest.raises(ValueError, match="batch axis"):
    L.dequantize(jax.random.key(0), 3, 17)


@pytest.mark.parametrize("x, match", [
    (np.array([0.0, 0.5]), "x must hold integers"),
    (np.array([0, 17]), "x must hold integers"),
    (np.array([-1, 3]), "x must hold integers"),
    (np.array([True, False]), "x must hold integers"),
])
def test_dequantize_refuses_non_integer_data(x, match):
  with pytest.raises(ValueError, match=match):
    L.dequantize(jax.random.key(0), x, 17)


def test_dequantize_refuses_bad_levels():
  for levels in (1, 2.0, True):
    with pytest.raises(ValueError, match="num_levels"):
      L.dequantize(jax.random.key(0), np.zeros(3, int), levels)


def test_bits_per_dim_of_the_uniform_density_is_log2_levels():
  d = 64
  # the uniform density on [0, 1]^D: -log p = 0 -> log2(17) bits/dim, exactly
  assert L.dequantized_bits_per_dim(0.0, d, 17) == pytest.approx(math.log2(17), rel=1e-12)
  # the uniform density on [-1, 1]^D in model space: nll D log 2, minus the Jacobian
  np.testing.assert_allclose(
      L.dequantized_bits_per_dim(np.full(3, d * math.log(2)), d, 17, log_jacobian=d * math.log(2)),
      math.log2(17), rtol=1e-12)
  # the formula (nll - log_jacobian + D log L) / (D ln 2)
  assert L.dequantized_bits_per_dim(100.0, d, 17, 5.0) == pytest.approx(
      (100.0 - 5.0 + d * math.log(17)) / (d * math.log(2)))
  traced = jax.jit(lambda v: L.dequantized_bits_per_dim(v, d, 17))(jnp.float32(100.0))
  assert float(traced) == pytest.approx((100.0 + d * math.log(17)) / (d * math.log(2)), rel=1e-6)
  with pytest.raises(ValueError, match="num_dims"):
    L.dequantized_bits_per_dim(0.0, 0, 17)
  with pytest.raises(ValueError, match="num_levels"):
    L.dequantized_bits_per_dim(0.0, 4, 1)


def test_jensen_bound_holds_for_a_density_on_the_bins():
  """A smooth density on [0, 1] (Beta(2, 3)): E_u[-log p] + log L >= -log P(x) per level."""
  levels = 5
  pdf = lambda y: 12 * y * (1 - y) ** 2                    # Beta(2, 3)
  cdf = lambda y: 6 * y**2 - 8 * y**3 + 3 * y**4
  for x in range(levels):
    mass = cdf((x + 1) / levels) - cdf(x / levels)
    y = np.asarray(L.dequantize(jax.random.key(x), np.full(200_000, x), levels), np.float64)
    bound = L.dequantized_bits_per_dim(np.mean(-np.log(pdf(y))), 1, levels)
    assert bound >= -math.log2(mass) - 1e-3


def test_mean_and_stderr():
  mean, se = L.mean_and_stderr([1.0, 2.0, 3.0, 4.0])
  assert mean == 2.5 and se == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
  with pytest.raises(ValueError, match="n >= 2"):
    L.mean_and_stderr([1.0])
  with pytest.raises(ValueError, match="finite"):
    L.mean_and_stderr([1.0, np.inf])
