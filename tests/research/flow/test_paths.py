"""Tests for research/flow/paths.py (t = 0 noise, t = 1 data)."""
import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.flow import paths


def _draws(key, shape, dtype=jnp.float32):
  k0, k1, ke = jax.random.split(key, 3)
  return (jax.random.normal(k0, shape, dtype), jax.random.normal(k1, shape, dtype),
          jax.random.normal(ke, shape, dtype))


# ----------------------------------------------------------------------------
# Targets equal the time derivative of the path (central differences, float64).
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("name,params", [
    ("icfm", {"sigma": 0.0}),
    ("icfm", {"sigma": 0.3}),
    ("vp", {}),
    ("lipman", {"sigma_min": 0.0}),
    ("lipman", {"sigma_min": 0.05}),
])
def test_target_is_time_derivative_of_path(name, params):
  # For Lipman, sample_xt(x0, x1, t) IS the conditional flow psi_t(x0), so
  # d/dt psi_t(x0) must equal u_t evaluated at x_t = psi_t(x0).
  path = paths.get_path(name, **params)
  h = 1e-5
  with jax.enable_x64(True):
    shape = (5, 3, 2)  # rank-3 example axes to exercise the broadcast of t
    x0, x1, eps = _draws(jax.random.key(0), shape, jnp.float64)
    t = jnp.array([0.05, 0.3, 0.5, 0.77, 0.95], jnp.float64)
    deriv = (path.sample_xt(x0, x1, t + h, eps)
             - path.sample_xt(x0, x1, t - h, eps)) / (2 * h)
    xt, ut = path.interpolate(x0, x1, t, eps)
    assert ut.dtype == jnp.float64
    # Central differences: O(h^2 x''') + O(1e-16 / h) ~ 1e-10.
    np.testing.assert_allclose(ut, deriv, atol=1e-7, rtol=1e-7)
    np.testing.assert_allclose(xt, path.sample_xt(x0, x1, t, eps))


def test_lipman_target_closed_form_on_path():
  sigma_min = 0.1
  path = paths.get_path("lipman", sigma_min=sigma_min)
  x0, x1, eps = _draws(jax.random.key(1), (4, 3))
  t = jnp.array([0.0, 0.25, 0.5, 0.999])
  _, ut = path.interpolate(x0, x1, t, eps)
  np.testing.assert_allclose(ut, x1 - (1 - sigma_min) * x0, atol=2e-5, rtol=1e-5)


# ----------------------------------------------------------------------------
# Boundary conditions.
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("name,params", [
    ("icfm", {"sigma": 0.0}), ("icfm", {"sigma": 0.2}),
    ("lipman", {"sigma_min": 0.0}), ("lipman", {"sigma_min": 0.01}),
    ("vp", {}),
])
def test_boundary_conditions(name, params):
  path = paths.get_path(name, **params)
  x0, x1, eps = _draws(jax.random.key(2), (3, 4, 4, 1))  # image-shaped
  zeros, ones = jnp.zeros(3), jnp.ones(3)
  noise_floor = params.get("sigma", 0.0) * eps
  # t = 0: the noise sample (plus sigma eps for I-CFM).
  np.testing.assert_allclose(path.sample_xt(x0, x1, zeros, eps), x0 + noise_floor,
                             atol=1e-6)
  # t = 1: the data (plus sigma eps for I-CFM; plus sigma_min x0 for Lipman).
  expected = x1 + noise_floor + params.get("sigma_min", 0.0) * x0
  np.testing.assert_allclose(path.sample_xt(x0, x1, ones, eps), expected, atol=1e-6)


def test_scalar_time_and_image_shapes():
  path = paths.get_path("vp")
  x0, x1, eps = _draws(jax.random.key(3), (2, 8, 8, 3))
  xt_scalar = path.sample_xt(x0, x1, 0.3, eps)
  xt_batch = path.sample_xt(x0, x1, jnp.full((2,), 0.3), eps)
  np.testing.assert_allclose(xt_scalar, xt_batch)
  chex.assert_shape(xt_scalar, (2, 8, 8, 3))
  assert xt_scalar.dtype == jnp.float32
  # Per-example times really apply per example.
  t = jnp.array([0.0, 1.0])
  xt = path.sample_xt(x0, x1, t, eps)
  np.testing.assert_allclose(xt[0], x0[0], atol=1e-6)
  np.testing.assert_allclose(xt[1], x1[1], atol=1e-6)


def test_paths_jit_and_vmap():
  path = paths.get_path("icfm", sigma=0.1)
  x0, x1, eps = _draws(jax.random.key(4), (6, 3))
  t = jnp.linspace(0, 1, 6)
  xt, ut = jax.jit(path.interpolate)(x0, x1, t, eps)
  # vmap over examples, each with batch axis 1.
  xt_v, ut_v = jax.vmap(lambda a, b, s, e: path.interpolate(
      a[None], b[None], s[None], e[None]))(x0, x1, t, eps)
  np.testing.assert_allclose(xt, xt_v[:, 0], atol=1e-6)
  np.testing.assert_allclose(ut, ut_v[:, 0], atol=1e-6)


# ----------------------------------------------------------------------------
# Bad input.
# ----------------------------------------------------------------------------
def test_unknown_path_lists_valid_names():
  with pytest.raises(ValueError, match="icfm.*lipman.*vp"):
    paths.get_path("cfm")


@pytest.mark.parametrize("name,params,arg", [
    ("icfm", {"sigma": -0.1}, "sigma"),
    ("icfm", {"sigma": math.inf}, "sigma"),
    ("lipman", {"sigma_min": 1.0}, "sigma_min"),
    ("lipman", {"sigma_min": -1e-3}, "sigma_min"),
    ("vp", {"sigma": 0.1}, "sigma"),
    ("icfm", {"sigma_min": 0.1}, "sigma_min"),
])
def test_bad_params_name_the_argument(name, params, arg):
  with pytest.raises(ValueError, match=arg):
    paths.get_path(name, **params)


def test_bad_shapes():
  path = paths.get_path("icfm")
  x = jnp.zeros((4, 2))
  with pytest.raises(ValueError, match="same shape"):
    path.sample_xt(x, jnp.zeros((4, 3)), jnp.zeros(4), x)
  with pytest.raises(ValueError, match="t must have shape"):
    path.sample_xt(x, x, jnp.zeros(3), x)


# ----------------------------------------------------------------------------
# Couplings.
# ----------------------------------------------------------------------------
def _total_cost(a, b):
  return float(np.sum((np.asarray(a) - np.asarray(b)) ** 2))


def _brute_force_min(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  n = a.shape[0]
  return min(np.sum((a - b[list(p)]) ** 2) for p in itertools.permutations(range(n)))


def _is_row_permutation(a, b):
  a = np.asarray(a).reshape(a.shape[0], -1)
  b = np.asarray(b).reshape(b.shape[0], -1)
  return sorted(map(tuple, a)) == sorted(map(tuple, b))


@pytest.mark.parametrize("n,shape", [(2, (3,)), (4, (2,)), (5, (2, 2, 1)), (6, (3,)),
                                     (6, (1,))])
def test_ot_coupling_matches_brute_force(n, shape):
  ot = jax.jit(paths.ot_coupling)
  for seed in range(3):
    x0, x1, _ = _draws(jax.random.key(10 * n + seed), (n,) + shape)
    y0, y1 = ot(x0, x1)
    np.testing.assert_array_equal(y0, x0)           # x0 is kept
    assert _is_row_permutation(y1, x1)              # x1 is only reordered
    ot_cost = _total_cost(y0, y1)
    np.testing.assert_allclose(ot_cost, _brute_force_min(x0, x1), rtol=1e-5)
    assert ot_cost <= _total_cost(*paths.independent_coupling(x0, x1)) + 1e-5


def test_ot_coupling_recovers_a_known_permutation():
  # x1 is a shuffled, slightly perturbed copy of x0: OT must undo the shuffle.
  x0 = jax.random.normal(jax.random.key(5), (16, 4))
  perm = jax.random.permutation(jax.random.key(6), 16)
  x1 = x0[perm] + 1e-3
  _, y1 = paths.ot_coupling(x0, x1)
  np.testing.assert_allclose(y1, x0 + 1e-3, atol=1e-6)


def test_couple_dispatch_and_errors():
  key = jax.random.key(7)
  x0, x1, _ = _draws(key, (5, 2))
  a0, a1 = paths.couple("independent", key, x0, x1)
  np.testing.assert_array_equal(a1, x1)
  b0, b1 = paths.couple("ot", key, x0, x1)
  np.testing.assert_allclose(_total_cost(b0, b1), _brute_force_min(x0, x1), rtol=1e-5)
  with pytest.raises(ValueError, match="independent.*ot"):
    paths.couple("sinkhorn", key, x0, x1)
  with pytest.raises(ValueError, match="same shape"):
    paths.ot_coupling(x0, x1[:4])


def test_pairwise_sq_dists():
  a, b, _ = _draws(jax.random.key(8), (4, 2, 3))
  direct = jnp.sum((a[:, None] - b[None]) ** 2, axis=(2, 3))
  np.testing.assert_allclose(paths.pairwise_sq_dists(a, b), direct, rtol=1e-5, atol=1e-5)
