"""Mode coverage on constructed samples: all modes hit, one missing, off-mode samples not HQ."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.data import toy
from research.metrics import modes

RING = toy.mixture("ring8")


def _at_modes(counts, jitter=0.05, seed=0):
  """counts[k] points near centre k (within `jitter` < 3 std = 0.3 of ring8)."""
  rng = np.random.default_rng(seed)
  pts = [np.asarray(RING.means[k]) + jitter * rng.uniform(-1, 1, (c, 2)) for k, c in enumerate(counts)]
  return np.concatenate(pts).astype(np.float32)


def test_balanced_samples_hit_every_mode_with_zero_kl():
  cov = modes.mode_coverage(_at_modes([50] * 8), RING.means, RING.stds)
  assert int(cov["modes_hit"]) == 8 and int(cov["num_modes"]) == 8
  assert float(cov["hq_fraction"]) == 1.0
  np.testing.assert_array_equal(cov["hq_counts"], [50] * 8)
  np.testing.assert_allclose(cov["mode_kl"], 0.0, atol=1e-6)
  np.testing.assert_allclose(cov["reverse_mode_kl"], 0.0, atol=1e-6)


def test_true_mixture_samples_hit_every_mode():
  x = toy.sample("ring8", jax.random.key(0), 2000)
  cov = modes.mode_coverage(x, RING.means, RING.stds)
  assert int(cov["modes_hit"]) == 8
  assert float(cov["hq_fraction"]) > 1 - math.exp(-4.5) - 0.01      # 98.9% inside 3 std in 2-D


def test_missing_mode_and_sparse_mode_are_not_hit():
  counts = [60, 60, 60, 60, 60, 60, 0, 3]   # n = 363, threshold = 0.2 * 363 / 8 = 9.1
  cov = modes.mode_coverage(_at_modes(counts), RING.means, RING.stds)
  assert int(cov["modes_hit"]) == 6
  np.testing.assert_allclose(cov["min_hq_count"], 0.2 * 363 / 8, rtol=1e-6)
  np.testing.assert_array_equal(cov["hq_counts"], counts)
  h = np.array(counts) / sum(counts)
  nz = h > 0
  np.testing.assert_allclose(cov["mode_kl"], np.sum(h[nz] * np.log(8 * h[nz])), rtol=1e-5)
  assert np.isfinite(cov["reverse_mode_kl"]) and float(cov["reverse_mode_kl"]) > 0.5
  # with min_fraction = 0 a single HQ sample hits a mode
  cov0 = modes.mode_coverage(_at_modes(counts), RING.means, RING.stds, min_fraction=0.0)
  assert int(cov0["modes_hit"]) == 7


def test_off_mode_samples_are_assigned_but_not_high_quality():
  # half-way between neighbouring centres: nearest-mode assignment still happens, but not HQ
  mid = 0.5 * (np.asarray(RING.means) + np.roll(np.asarray(RING.means), -1, axis=0))
  x = np.concatenate([_at_modes([10] * 8), mid.astype(np.float32)])
  cov = modes.mode_coverage(x, RING.means, RING.stds)
  np.testing.assert_allclose(cov["hq_fraction"], 80 / 88, rtol=1e-6)
  assert int(np.sum(cov["assigned_counts"])) == 88 and int(np.sum(cov["hq_counts"])) == 80
  # all samples in one mode: KL(h || U) = log K
  one = modes.mode_coverage(_at_modes([40, 0, 0, 0, 0, 0, 0, 0]), RING.means, RING.stds)
  assert int(one["modes_hit"]) == 1
  np.testing.assert_allclose(one["mode_kl"], math.log(8), rtol=1e-6)
  # no HQ sample at all: hq_fraction 0, no mode hit, KL reported as log K
  none = modes.mode_coverage(jnp.zeros((16, 2)), RING.means, RING.stds)
  assert int(none["modes_hit"]) == 0 and float(none["hq_fraction"]) == 0.0
  np.testing.assert_allclose(none["mode_kl"], math.log(8), rtol=1e-6)


def test_jittable_and_rejects_bad_shapes():
  x = _at_modes([5] * 8)
  out = jax.jit(lambda s: modes.mode_coverage(s, RING.means, RING.stds))(x)
  assert int(out["modes_hit"]) == 8
  with pytest.raises(ValueError, match="samples must be"):
    modes.mode_coverage(x[:, :1], RING.means, RING.stds)
  with pytest.raises(ValueError, match="min_fraction"):
    modes.mode_coverage(x, RING.means, RING.stds, min_fraction=2.0)
