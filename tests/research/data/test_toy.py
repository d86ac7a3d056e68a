"""Tests for research.data.toy: shapes, determinism and the documented geometry."""
import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import spatial, stats

from research.data import gmm as G
from research.data import toy

N = 4000
_sample = jax.jit(toy.sample, static_argnums=(0, 2))


@functools.lru_cache(maxsize=None)
def _points(name, seed=0):
  return np.asarray(_sample(name, jax.random.key(seed), N), np.float64)


def _dist_to_polyline(x, curve):
  """Min distance from each row of x (n, 2) to a dense set of curve points (m, 2)."""
  return spatial.cKDTree(curve).query(x)[0]


def _uniform_counts_ok(labels, k):
  counts = np.bincount(labels, minlength=k)
  return stats.chisquare(counts).pvalue > 1e-3


@pytest.mark.parametrize("name", toy.NAMES)
def test_shape_dtype_finite_deterministic(name):
  x = _sample(name, jax.random.key(0), N)
  assert x.shape == (N, 2) and x.dtype == jnp.float32
  assert np.all(np.isfinite(x))
  np.testing.assert_array_equal(x, _sample(name, jax.random.key(0), N))
  other = _sample(name, jax.random.key(1), N)
  assert not np.allclose(x, other)
  # Unit-ish scale: centred-ish, per-coordinate std between 0.5 and 2, inside [-4, 4].
  xn = np.asarray(x)
  assert np.all(np.abs(xn.mean(0)) < 0.5), xn.mean(0)
  assert np.all((xn.std(0) > 0.5) & (xn.std(0) < 2.0)), xn.std(0)
  assert np.all(np.abs(xn) < 4.5)


def test_names_and_jit_matches_eager():
  assert set(toy.NAMES) >= {"ring8", "grid25", "moons", "swissroll", "checkerboard",
                            "circles", "pinwheel", "spirals"}
  eager = toy.sample("circles", jax.random.key(3), 64)
  np.testing.assert_allclose(eager, _sample("circles", jax.random.key(3), 64),
                             rtol=1e-5, atol=1e-5)


class VariantTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_checkerboard_variants(self):
    f = self.variant(toy.sample, static_argnums=(0, 2))
    x = f("checkerboard", jax.random.key(0), 32)
    assert x.shape == (32, 2) and x.dtype == jnp.float32


def test_ring8_near_its_modes():
  x = _points("ring8")
  r = np.linalg.norm(x, axis=-1)
  assert np.all(np.abs(r - 2.0) < 0.5)                 # radius 2, std 0.1 (5 std)
  g = toy.mixture("ring8")
  means = np.asarray(g.means, np.float64)
  d = np.sqrt(((x[:, None] - means[None])**2).sum(-1))
  assert np.all(d.min(1) < 6 * 0.1)
  assert _uniform_counts_ok(d.argmin(1), 8)
  # Per-coordinate spread around the assigned centre is the documented std.
  resid = x - means[d.argmin(1)]
  np.testing.assert_allclose(resid.std(), 0.1, rtol=0.05)


def test_grid25_near_its_centres():
  x = _points("grid25")
  g = toy.mixture("grid25")
  means = np.asarray(g.means, np.float64)
  np.testing.assert_allclose(sorted(set(np.round(means[:, 0], 6))), [-2, -1, 0, 1, 2])
  d = np.sqrt(((x[:, None] - means[None])**2).sum(-1))
  assert np.all(d.min(1) < 6 * 0.05)
  assert _uniform_counts_ok(d.argmin(1), 25)
  np.testing.assert_allclose((x - means[d.argmin(1)]).std(), 0.05, rtol=0.05)


def test_mixture_matches_samples_and_rejects_non_mixtures():
  for name in toy.MIXTURE_NAMES:
    g = toy.mixture(name)
    assert isinstance(g, G.GaussianMixture)
    x = jnp.asarray(_points(name), jnp.float32)
    # Average log-likelihood of own samples = negative entropy ~ that of the mixture.
    ref = jax.jit(G.log_prob)(g, jax.jit(G.sample, static_argnums=2)(
        jax.random.key(9), g, N))
    np.testing.assert_allclose(jax.jit(G.log_prob)(g, x).mean(), ref.mean(), atol=0.1)
  with pytest.raises(ValueError, match="ring8"):
    toy.mixture("moons")


def test_circles_two_radii():
  r = np.linalg.norm(_points("circles"), axis=-1)
  outer = np.abs(r - 2.0) < 0.4
  inner = np.abs(r - 1.0) < 0.4
  assert np.all(outer | inner)
  assert abs(outer.mean() - 0.5) < 0.04
  np.testing.assert_allclose(r[outer].mean(), 2.0, atol=0.02)
  np.testing.assert_allclose(r[inner].mean(), 1.0, atol=0.02)


def test_checkerboard_points_in_black_squares():
  x = _points("checkerboard")
  assert np.all((x >= -2) & (x < 2))
  fx, fy = np.floor(x[:, 0]).astype(int), np.floor(x[:, 1]).astype(int)
  assert np.all((fx + fy) % 2 == 0)
  cell = (fx + 2) * 4 + (fy + 2)
  counts = np.bincount(cell, minlength=16)
  black = counts[counts > 0]
  assert black.size == 8 and stats.chisquare(black).pvalue > 1e-3


def test_moons_near_the_two_arcs():
  x = _points("moons")
  m = x / 2.0 + np.array([0.5, 0.25])              # undo centring and scaling
  a = np.linspace(0, math.pi, 2000)
  upper = np.stack([np.cos(a), np.sin(a)], -1)
  lower = np.stack([1 - np.cos(a), 0.5 - np.sin(a)], -1)
  d = _dist_to_polyline(m, np.concatenate([upper, lower]))
  assert np.all(d < 5 * 0.1)                         # noise std 0.1 in moon units
  assert 0.08 < np.sqrt((d**2).mean()) < 0.12       # ~ noise std (normal component)
  near_upper = _dist_to_polyline(m, upper) < _dist_to_polyline(m, lower)
  assert abs(near_upper.mean() - 0.5) < 0.05


def test_swissroll_near_its_curve():
  x = _points("swissroll")
  t = np.linspace(1.5 * math.pi, 4.5 * math.pi, 4000)
  curve = 0.2 * np.stack([t * np.cos(t), t * np.sin(t)], -1)
  d = _dist_to_polyline(x, curve)
  assert np.all(d < 5 * 0.2)
  assert np.mean(d < 0.4) > 0.8
  r = np.linalg.norm(x, axis=-1)
  assert r.min() > 0.2 * 1.5 * math.pi - 1.0 and r.max() < 0.2 * 4.5 * math.pi + 1.0


def test_pinwheel_arms():
  x = _points("pinwheel")
  r = np.linalg.norm(x, axis=-1) / 2.0             # ~ |(r, q)|, r ~ N(1, 0.3^2)
  np.testing.assert_allclose(np.median(r), 1.0, atol=0.05)
  # Undo the spiral twist: the remaining angle sits near one of 5 arm angles.
  twist = np.arctan2(x[:, 1], x[:, 0]) - 0.25 * np.exp(r)
  arm = np.round(twist / (2 * math.pi / 5))
  resid = twist - arm * 2 * math.pi / 5
  assert np.mean(np.abs(resid) < 0.35) > 0.97
  assert _uniform_counts_ok((arm.astype(int) % 5), 5)


def test_spirals_near_the_two_curves():
  x = _points("spirals")
  s = np.linspace(0, 3 * math.pi, 6000)
  base = np.stack([-s * np.cos(s), s * np.sin(s)], -1) + 0.25   # mean jitter
  c1, c2 = base / 3.0, -base / 3.0
  d = _dist_to_polyline(x, np.concatenate([c1, c2]))
  # Uniform jitter (within 0.25 sqrt(2) / 3 of its mean) plus N(0, 0.1^2) noise.
  assert np.all(d < 0.25 / 3 * math.sqrt(2) + 5 * 0.1)
  first = _dist_to_polyline(x, c1) < _dist_to_polyline(x, c2)
  assert abs(first.mean() - 0.5) < 0.05


def test_bad_input():
  with pytest.raises(ValueError, match="ring8") as err:
    toy.sample("nope", jax.random.key(0), 3)
  for name in toy.NAMES:
    assert name in str(err.value)
  for n in (0, -1, 2.5):
    with pytest.raises(ValueError, match="n must"):
      toy.sample("ring8", jax.random.key(0), n)
  with pytest.raises(ValueError, match="name"):
    toy.mixture("nope")


def test_reference_density_is_normalised_and_exact_for_mixtures():
  axis = np.linspace(-3.5, 3.5, 141)
  cell = (axis[1] - axis[0]) ** 2
  ring = toy.reference_density("ring8", axis)
  assert ring.shape == (141, 141)
  np.testing.assert_allclose(ring.sum() * cell, 1.0, atol=1e-3)
  # row i is y = axis[i], column j is x = axis[j]: the mode at (x, y) = (2, 0) is at row 70
  x2, y0 = int(np.argmin(abs(axis - 2.0))), int(np.argmin(abs(axis)))
  assert ring[y0, x2] > 1e3 * ring[y0, y0] and ring[y0, x2] > 1e3 * ring[x2, y0 - 10]
  moons = toy.reference_density("moons", axis, num_points=200_000)
  np.testing.assert_allclose(moons.sum() * cell, 1.0, atol=1e-2)   # moons fits in the box
  with pytest.raises(ValueError, match="axis"):
    toy.reference_density("ring8", np.zeros((2, 2)))
  with pytest.raises(ValueError, match="name"):
    toy.reference_density("nope", axis)
