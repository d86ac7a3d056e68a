"""k-NN precision/recall/density/coverage: brute force, limiting cases, mode dropping, bad input."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from research.metrics import precision_recall as PR


def _brute_force(real, fake, k):
  real, fake = real.astype(np.float64), fake.astype(np.float64)
  d_rr = ((real[:, None] - real[None]) ** 2).sum(-1)
  d_ff = ((fake[:, None] - fake[None]) ** 2).sum(-1)
  d_rf = ((real[:, None] - fake[None]) ** 2).sum(-1)
  r_real = np.sort(d_rr, axis=1)[:, k]         # index 0 is the point itself
  r_fake = np.sort(d_ff, axis=1)[:, k]
  inside = d_rf < r_real[:, None]              # (real, fake): fake in real ball
  return {
      "precision": inside.any(0).mean(),
      "recall": (d_rf < r_fake[None, :]).any(1).mean(),
      "density": inside.sum() / (k * len(fake)),
      "coverage": (d_rf.min(1) < r_real).mean(),
  }


def _mixture(seed, n, centres, scale=0.1):
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, len(centres), size=n)
  noise = scale * rng.normal(size=(n, len(centres[0])))
  return (np.asarray(centres)[idx] + noise).astype(np.float32)


@pytest.mark.parametrize("k, batch_size", [(5, 1024), (3, 7)])
def test_matches_brute_force(k, batch_size):
  rng = np.random.default_rng(k)
  real = rng.normal(size=(120, 5)).astype(np.float32)
  fake = (1.3 * rng.normal(size=(90, 5)) + 0.3).astype(np.float32)
  got = PR.precision_recall_density_coverage(real, fake, k=k, batch_size=batch_size)
  want = _brute_force(real, fake, k)
  for name in want:
    np.testing.assert_allclose(got[name], want[name], atol=1e-6, err_msg=name)


def test_knn_radii_sq_matches_sort():
  x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
  d = ((x[:, None].astype(np.float64) - x[None]) ** 2).sum(-1)
  np.testing.assert_allclose(PR.knn_radii_sq(x, k=4, batch_size=16), np.sort(d, 1)[:, 4],
                             rtol=1e-4, atol=1e-5)


def test_identical_sets_score_one():
  x = np.random.default_rng(1).normal(size=(400, 8)).astype(np.float32)
  out = PR.precision_recall_density_coverage(x, x, k=5)
  assert float(out["precision"]) == 1.0
  assert float(out["recall"]) == 1.0
  assert float(out["coverage"]) == 1.0
  # Each real ball holds itself and its k - 1 nearer neighbours (open balls, no ties).
  assert abs(float(out["density"]) - 1.0) <= 0.02


def test_far_apart_sets_score_zero():
  rng = np.random.default_rng(2)
  real = rng.normal(size=(200, 4)).astype(np.float32)
  fake = (rng.normal(size=(150, 4)) + 100.0).astype(np.float32)
  out = PR.precision_recall_density_coverage(real, fake, k=5)
  for name in ("precision", "recall", "density", "coverage"):
    assert float(out[name]) == 0.0, name


def test_dropping_half_of_the_modes():
  centres = [(10.0 * np.cos(a), 10.0 * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 8,
                                                                       endpoint=False)]
  real = _mixture(3, 2000, centres)
  fake = _mixture(4, 1000, centres[:4])          # a model that covers 4 of the 8 modes
  out = PR.precision_recall_density_coverage(real, fake, k=5)
  assert float(out["precision"]) >= 0.95         # every fake is realistic
  assert 0.4 <= float(out["recall"]) <= 0.55     # about half of the reals are reproduced
  assert 0.4 <= float(out["coverage"]) <= 0.55
  assert 0.8 <= float(out["density"]) <= 1.3
  full = PR.precision_recall_density_coverage(real, _mixture(5, 1000, centres), k=5)
  assert float(full["recall"]) >= 0.9
  assert float(full["coverage"]) >= 0.8            # 1000 fakes for 2000 real balls


def test_jit_and_set_size_asymmetry():
  rng = np.random.default_rng(6)
  real = rng.normal(size=(64, 3)).astype(np.float32)
  fake = rng.normal(size=(40, 3)).astype(np.float32)
  jitted = jax.jit(lambda a, b: PR.precision_recall_density_coverage(a, b, k=3, batch_size=16))
  eager = PR.precision_recall_density_coverage(real, fake, k=3)
  got = jitted(real, fake)
  for name in eager:
    np.testing.assert_allclose(got[name], eager[name], atol=1e-6)
  # Swapping the roles swaps precision and recall.
  swapped = PR.precision_recall_density_coverage(fake, real, k=3)
  np.testing.assert_allclose(swapped["precision"], eager["recall"], atol=1e-6)
  np.testing.assert_allclose(swapped["recall"], eager["precision"], atol=1e-6)


def test_bad_input_raises():
  x = np.zeros((10, 2), np.float32)
  for bad_k in (0, -1, 2.5, True):
    with pytest.raises(ValueError, match="k must"):
      PR.precision_recall_density_coverage(x, x, k=bad_k)
  with pytest.raises(ValueError, match="k must be smaller"):
    PR.precision_recall_density_coverage(x, x[:5], k=5)
  with pytest.raises(ValueError, match="k must be smaller"):
    PR.knn_radii_sq(x, k=10)
  with pytest.raises(ValueError, match="fake_features"):
    PR.precision_recall_density_coverage(x, np.zeros((10, 3)), k=2)
  with pytest.raises(ValueError, match="real_features"):
    PR.precision_recall_density_coverage(np.zeros(10), x, k=2)
  with pytest.raises(ValueError, match="batch_size"):
    PR.precision_recall_density_coverage(x, x, k=2, batch_size=0)
