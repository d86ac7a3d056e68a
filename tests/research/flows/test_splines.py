"""Rational-quadratic spline: identity at zero, round trips, log-dets against autodiff,
finite values and gradients at and outside the interval, bad input, the spline coupling."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.flows import conditioners, coupling, splines

B = 3.0
SPLINE = splines.RationalQuadratic(num_bins=8, bound=B)


def _raw(key, n, scale=1.5, spline=SPLINE, dtype=jnp.float32):
  return scale * jax.random.normal(key, (n, spline.num_params), dtype)


@jax.jit
def _knot_points(raw):
  """x knots and y knots of each row's spline (n, K + 1)."""
  widths, heights, _ = SPLINE.spline_params(raw)
  return splines.knot_positions(widths, B), splines.knot_positions(heights, B)


# One random spline per point; every float32 test uses N points, so each compiles once.
N = 1001
FORWARD, INVERSE = jax.jit(SPLINE.forward), jax.jit(SPLINE.inverse)
PARAMS = jax.jit(SPLINE.spline_params)


def test_zero_raw_is_the_identity():
  raw = jnp.zeros((N, SPLINE.num_params))
  x = jnp.linspace(-2 * B, 2 * B, N)
  widths, heights, derivatives = PARAMS(raw)
  np.testing.assert_allclose(derivatives, 1.0, atol=1e-7)
  np.testing.assert_allclose(widths, 2 * B / SPLINE.num_bins, rtol=1e-6)
  np.testing.assert_array_equal(widths, heights)
  for direction in (FORWARD, INVERSE):
    y, log_det = direction(raw, x)
    np.testing.assert_allclose(y, x, atol=1e-6)
    np.testing.assert_allclose(log_det, 0.0, atol=1e-6)
  with jax.enable_x64(True):
    _, _, derivatives = PARAMS(jnp.zeros((N, SPLINE.num_params), jnp.float64))
    np.testing.assert_allclose(derivatives, 1.0, rtol=0, atol=1e-15)


def test_float32_round_trip_across_and_outside_the_interval():
  """inverse(forward(x)) = x and forward(inverse(x)) = x to 1e-5, one random spline per x."""
  x = jnp.linspace(-1.5 * B, 1.5 * B, N)
  raw = _raw(jax.random.key(0), N, 0.5)
  y, log_det_fwd = FORWARD(raw, x)
  x_back, log_det_inv = INVERSE(raw, y)
  np.testing.assert_allclose(x_back, x, atol=1e-5)
  np.testing.assert_allclose(log_det_fwd, -log_det_inv, atol=1e-5)
  np.testing.assert_allclose(FORWARD(raw, INVERSE(raw, x)[0])[0], x, atol=1e-5)


def test_strong_splines_are_monotone_and_their_inverse_is_a_backward_stable_solve():
  """Steep and flat bins: y is increasing and forward(inverse(y)) = y to a few ulps.

  (x itself cannot come back to 1e-5 where dy/dx ~ 1e-4: rounding y moves x by eps |y| / g.)
  """
  x = jnp.linspace(-1.5 * B, 1.5 * B, N)
  raw = jnp.broadcast_to(_raw(jax.random.key(1), 1, 3.0), (N, SPLINE.num_params))
  y, _ = FORWARD(raw, x)
  assert bool(jnp.all(jnp.diff(y) > 0))
  x_back, log_det = INVERSE(raw, y)
  assert bool(jnp.all(jnp.isfinite(x_back))) and bool(jnp.all(jnp.isfinite(log_det)))
  np.testing.assert_allclose(FORWARD(raw, x_back)[0], y, atol=2e-6)


@pytest.mark.parametrize("scale", [0.0, 1e-5, 1e-3])
def test_inverse_is_exact_near_the_identity_where_the_leading_coefficient_vanishes(scale):
  """a = s - delta^k + t u -> 0 near raw = 0: the textbook root (-b + sqrt(D)) / 2a is 0 / 0
  there (NaN at raw = 0, 0.5 off at 1e-5); the stable 2c / (-b - sqrt(D)) is not."""
  y = jnp.linspace(-1.5 * B, 1.5 * B, N)
  raw = _raw(jax.random.key(2), N, scale)
  x, log_det = INVERSE(raw, y)
  np.testing.assert_allclose(x, y, atol=1e-5 + 20 * scale)
  np.testing.assert_allclose(FORWARD(raw, x)[0], y, atol=1e-6)
  assert bool(jnp.all(jnp.isfinite(log_det)))


def test_bin_search_is_exact_at_the_knots():
  """Knots map to knots in both directions (index in 0..K-1, position in [0, 1], no gather
  past the end at x = B)."""
  raw = _raw(jax.random.key(3), N // (SPLINE.num_bins + 1), 1.0)
  x_knots, y_knots = (k.reshape(-1) for k in _knot_points(raw))
  rows = jnp.repeat(raw, SPLINE.num_bins + 1, axis=0)
  rows, x_knots, y_knots = (jnp.resize(a, (N, *a.shape[1:])) for a in (rows, x_knots, y_knots))
  np.testing.assert_allclose(FORWARD(rows, x_knots)[0], y_knots, atol=1e-5)
  np.testing.assert_allclose(INVERSE(rows, y_knots)[0], x_knots, atol=1e-5)


@jax.jit
def _autodiff_check(raw):
  """Per direction (dy/dx by autodiff, the spline's log|dy/dx|), and the inverse log-det at
  the forward's outputs, at the knots, bin interiors, both tails and +-B of each row."""
  x_knots, y_knots = _knot_points(raw)
  grid = jnp.broadcast_to(jnp.linspace(-1.4 * B, 1.4 * B, 37), (raw.shape[0], 37))
  points = jnp.concatenate([x_knots, y_knots, grid], 1)
  rows = jnp.repeat(raw[:, None, :], points.shape[1], axis=1)
  out = []
  for direction in (SPLINE.forward, SPLINE.inverse):
    grad = jax.vmap(jax.vmap(jax.grad(lambda r, v: direction(r, v)[0], argnums=1)))
    out.append((grad(rows, points), direction(rows, points)[1]))
  y, log_det_fwd = SPLINE.forward(rows, points)
  return out, log_det_fwd, SPLINE.inverse(rows, y)[1]


def test_log_dets_match_autodiff_in_float64():
  with jax.enable_x64(True):
    derivatives, log_det_fwd, log_det_inv = _autodiff_check(
        _raw(jax.random.key(4), 4, 2.0, dtype=jnp.float64))
    for grad, log_det in derivatives:
      np.testing.assert_allclose(log_det, jnp.log(jnp.abs(grad)), rtol=0, atol=1e-10)
    np.testing.assert_allclose(log_det_fwd, -log_det_inv, rtol=0, atol=1e-10)


def test_general_linear_tails_of_the_pure_function_in_float64():
  """Boundary derivatives other than 1: the tails continue the spline with those slopes."""
  with jax.enable_x64(True):
    key_w, key_h, key_d = jax.random.split(jax.random.key(5), 3)
    widths = 2 * B * jax.nn.softmax(jax.random.normal(key_w, (5,), jnp.float64))
    heights = 2 * B * jax.nn.softmax(jax.random.normal(key_h, (5,), jnp.float64))
    derivatives = jnp.exp(jax.random.normal(key_d, (6,), jnp.float64))
    x = jnp.linspace(-2 * B, 2 * B, 81)

    @jax.jit
    def run(x):
      def spline(v, inverse=False):
        return splines.rational_quadratic_spline(v, widths, heights, derivatives, bound=B,
                                                 inverse=inverse)
      y, log_det = spline(x)
      return y, log_det, jax.vmap(jax.grad(lambda v: spline(v)[0]))(x), spline(y, True)

    y, log_det, grad, (x_back, log_det_inv) = run(x)
    np.testing.assert_allclose(log_det, jnp.log(grad), atol=1e-10)
    np.testing.assert_allclose(y[0], -B + derivatives[0] * (x[0] + B), atol=1e-12)
    np.testing.assert_allclose(y[-1], B + derivatives[-1] * (x[-1] - B), atol=1e-12)
    np.testing.assert_allclose(x_back, x, atol=1e-10)
    np.testing.assert_allclose(log_det_inv, -log_det, atol=1e-10)


EDGE_POINTS = [-B, B, -B - 2.4e-7, -B + 2.4e-7, B - 2.4e-7, B + 2.4e-7, 0.0, 1e6, -1e6, 1e30,
               -1e30, -3e38, 3e38, np.inf, -np.inf]


@functools.partial(jax.jit, static_argnums=0)
def _values_and_grads(inverse, raw, points):
  direction = SPLINE.inverse if inverse else SPLINE.forward

  def loss(r, v):
    y, log_det = direction(r, v)
    return jnp.sum(jnp.tanh(y)) + jnp.sum(log_det)

  slope = jax.vmap(jax.grad(lambda r, v: direction(r, v)[0], argnums=1))(raw, points)
  return direction(raw, points), jax.grad(loss, argnums=(0, 1))(raw, points), slope


@pytest.mark.parametrize("inverse", [False, True])
def test_finite_values_and_gradients_at_and_outside_the_interval(inverse):
  """flowjax #239 / nflows #23: the unselected spline branch must not leak NaN gradients."""
  points = jnp.array(EDGE_POINTS, jnp.float32)
  finite = jnp.isfinite(points)
  raw = _raw(jax.random.key(6), points.shape[0], 3.0)
  (y, log_det), (grad_raw, grad_x), slope = _values_and_grads(inverse, raw, points)
  np.testing.assert_array_equal(jnp.isfinite(y), finite)  # +-inf in, +-inf out; else finite
  assert bool(jnp.all(jnp.isfinite(log_det)))
  outside = jnp.abs(points) >= B
  np.testing.assert_array_equal(jnp.where(outside, y, points), points)  # identity tails
  np.testing.assert_array_equal(jnp.where(outside, log_det, 0.0), 0.0)
  assert bool(jnp.all(jnp.isfinite(grad_raw))) and bool(jnp.all(jnp.isfinite(grad_x)))
  np.testing.assert_array_equal(jnp.where(outside[:, None], grad_raw, 0.0), 0.0)
  # dy/dx at exactly +-B is the tail's slope 1 (the one-sided limits agree), not half of it.
  np.testing.assert_allclose(slope[:2], 1.0, rtol=1e-6)
  assert bool(jnp.all(jnp.isfinite(slope)))


@pytest.mark.parametrize("kwargs, name", [
    (dict(num_bins=1), "num_bins"), (dict(num_bins=0), "num_bins"),
    (dict(num_bins=True), "num_bins"), (dict(num_bins=4.0), "num_bins"),
    (dict(bound=0.0), "bound"), (dict(bound=-1.0), "bound"),
    (dict(num_bins=5, min_bin_width=0.2), "min_bin_width"),
    (dict(min_bin_width=-1e-3), "min_bin_width"),
    (dict(num_bins=4, min_bin_height=0.3), "min_bin_height"),
    (dict(min_derivative=-1e-3), "min_derivative"), (dict(min_derivative=1.0), "min_derivative"),
])
def test_bad_configuration_is_refused(kwargs, name):
  with pytest.raises(ValueError, match=name):
    splines.RationalQuadratic(**kwargs)


def test_bad_arguments_are_refused():
  with pytest.raises(ValueError, match="raw"):
    SPLINE.forward(jnp.zeros((3, SPLINE.num_params + 1)), jnp.zeros(3))
  w, d = jnp.full((4,), 1.5), jnp.ones(5)
  with pytest.raises(ValueError, match="wrong order"):
    splines.rational_quadratic_spline(0.0, w, w, d, bound=-3.0)
  with pytest.raises(ValueError, match="heights"):
    splines.rational_quadratic_spline(0.0, w, jnp.full((3,), 2.0), d, bound=3.0)
  with pytest.raises(ValueError, match="derivatives"):
    splines.rational_quadratic_spline(0.0, w, w, jnp.ones(4), bound=3.0)


def test_matches_distrax():
  """The same splines as distrax.RationalQuadraticSpline, to 1e-10 in float64.

  distrax: params [K widths | K heights | K + 1 slopes], bin sizes min + (2B - K min) softmax,
  slopes min + softplus(u + log(expm1(1 - min))) -- ours with min = 2B m_w, m_d, and the
  boundary slopes pinned to 1 by boundary_slopes="identity".
  """
  distrax = pytest.importorskip("distrax")
  spline = splines.RationalQuadratic(num_bins=6, bound=2.5)
  k = spline.num_bins

  @jax.jit
  def both(raw, x):
    zero = jnp.zeros_like(raw[:, :1])
    params = jnp.concatenate([raw[:, :2 * k], zero, raw[:, 2 * k:], zero], axis=-1)
    peer = distrax.RationalQuadraticSpline(params, -2.5, 2.5, boundary_slopes="identity",
                                           min_bin_size=5e-3, min_knot_slope=1e-3)
    return ((spline.forward(raw, x), peer.forward_and_log_det(x)),
            (spline.inverse(raw, x), peer.inverse_and_log_det(x)))

  with jax.enable_x64(True):
    raw = _raw(jax.random.key(7), 201, 2.0, spline, jnp.float64)
    for ours, theirs in both(raw, jnp.linspace(-4.0, 4.0, 201, dtype=jnp.float64)):
      np.testing.assert_allclose(ours[0], theirs[0], rtol=0, atol=1e-10)
      np.testing.assert_allclose(ours[1], theirs[1], rtol=0, atol=1e-10)


COUPLING = coupling.Coupling((4,), splines.RationalQuadratic(), conditioners.MLP((16,)))


@jax.jit
def _coupling_params(key, x, scale):
  """Initial (identity) parameters and a perturbation of every leaf by scale * N(0, 1)."""
  key_init, key_noise = jax.random.split(key)
  params = COUPLING.init(key_init, x)
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(key_noise, len(leaves))
  return params, jax.tree.unflatten(
      tree, [p + scale * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)])


@jax.jit
def _coupling_round_trip(params, x):
  z, log_det_inv = COUPLING.inverse_and_log_det(params, x)
  x_back, log_det_fwd = COUPLING.forward_and_log_det(params, z)
  return z, log_det_inv, x_back, log_det_fwd


def test_spline_coupling_identity_at_init_and_round_trip():
  x = 2.0 * jax.random.normal(jax.random.key(8), (8, 4))
  for params, scale in zip(_coupling_params(jax.random.key(9), x, 0.1), (0.0, 0.1)):
    z, log_det_inv, x_back, log_det_fwd = _coupling_round_trip(params, x)
    if scale == 0.0:  # identity at init
      np.testing.assert_allclose(z, x, atol=1e-5)
      np.testing.assert_allclose(log_det_inv, 0.0, atol=1e-5)
    else:
      assert float(jnp.max(jnp.abs(z - x))) > 1e-1  # the perturbation does something
    np.testing.assert_allclose(x_back, x, atol=1e-5)
    np.testing.assert_allclose(log_det_fwd, -log_det_inv, atol=1e-5)


def test_spline_coupling_log_det_matches_jacobian_in_float64():
  x = 2.0 * jax.random.normal(jax.random.key(10), (8, 4))
  _, params = _coupling_params(jax.random.key(11), x, 0.5)  # float32, then cast
  with jax.enable_x64(True):
    x, params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), (x, params))

    @jax.jit
    def check(params, v):
      out = []
      for method in (COUPLING.forward_and_log_det, COUPLING.inverse_and_log_det):
        jac = jax.vmap(jax.jacfwd(lambda u: method(params, u[None])[0][0]))(v)
        out.append((method(params, v)[1], jnp.linalg.slogdet(jac)[1]))
      return out

    for log_det, expected in check(params, x):
      np.testing.assert_allclose(log_det, expected, rtol=0, atol=1e-10)
