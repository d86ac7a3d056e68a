"""MADE masks and MAF: the autoregressive property, identity at init, round trips, log-dets
against the Jacobian in float64, jit / vmap / one loop, dim = 1, bad input.

Compiles dominate the run time, so the tests share two layers (affine in order 0..D-1, spline
reversed) and one jitted round trip per layer."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.flows import maf, splines, transformers

DIM = 5
AFFINE = transformers.Affine()
SPLINE = splines.RationalQuadratic(num_bins=4)
# Two layers cover both transformers and both orders (each distinct layer costs compiles).
LAYERS = {"affine": maf.MAF(DIM, AFFINE, hidden=(12, 12)),
          "spline_reversed": maf.MAF(DIM, SPLINE, hidden=(12, 12), reverse=True)}
CASES = sorted(LAYERS)


def _x(dtype=jnp.float32, n=6, dim=DIM):
  return 1.5 * jax.random.normal(jax.random.key(0), (n, dim), dtype)


@functools.partial(jax.jit, static_argnums=0)
def _params(layer, key, x, scale):
  """The layer's initial parameters with every leaf moved by scale * N(0, 1)."""
  key_init, key_noise = jax.random.split(key)
  leaves, tree = jax.tree.flatten(layer.init(key_init, x))
  keys = jax.random.split(key_noise, len(leaves))
  return jax.tree.unflatten(
      tree, [p + scale * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)])


def _connectivity(masks):
  """(num_inputs, num_outputs): whether any path through the masked layers links them."""
  path = masks[0].astype(np.int64)
  for mask in masks[1:]:
    path = path @ mask.astype(np.int64)
  return path > 0


@pytest.mark.parametrize("hidden", [(), (3,), (4, 6), (8, 8, 8)])
@pytest.mark.parametrize("order", [(0, 1, 2, 3, 4), (4, 3, 2, 1, 0), (2, 0, 4, 1, 3)])
def test_made_masks_are_autoregressive_in_the_order(hidden, order):
  masks = maf.made_masks(DIM, hidden, 3, order)
  widths = [DIM, *hidden, DIM * 3]
  assert [m.shape for m in masks] == list(zip(widths[:-1], widths[1:]))
  degree = np.empty(DIM, int)
  degree[list(order)] = np.arange(1, DIM + 1)
  allowed = degree[:, None] < np.repeat(degree, 3)[None, :]  # input k -> output (i, p)
  connected = _connectivity(masks)
  np.testing.assert_array_equal(connected & ~allowed, False)
  if not hidden or min(hidden) >= DIM - 1:  # every allowed connection is present
    np.testing.assert_array_equal(connected, allowed)


def test_made_masks_of_one_input_connect_nothing_to_the_output():
  masks = maf.made_masks(1, (4,), 2, (0,))
  assert not _connectivity(masks).any()


@pytest.mark.parametrize("case", CASES)
def test_raw_params_are_strictly_lower_triangular_in_the_order(case):
  layer = LAYERS[case]
  params = _params(layer, jax.random.key(1), _x(), 0.3)
  jac = jax.jit(jax.jacfwd(layer.raw_params, argnums=1))(params, _x()[0])  # (D, P, D)
  order = np.array(layer.order)
  permuted = np.abs(np.asarray(jac))[order][:, :, order]  # [a, p, b]: d raw_{o_a} / d x_{o_b}
  upper = np.triu(np.ones((DIM, DIM), bool))  # b >= a: must not depend
  np.testing.assert_array_equal(np.where(upper[:, None, :], permuted, 0.0), 0.0)
  assert (permuted.max(axis=1)[~upper] > 0).all()  # and every earlier input does


@functools.partial(jax.jit, static_argnums=0)
def _round_trip(layer, params, x):
  """inverse then forward: (z, log|dz/dx|, x back, log|dx/dz| at z) -- one compile per layer."""
  z, log_det_inv = layer.inverse_and_log_det(params, x)
  x_back, log_det_fwd = layer.forward_and_log_det(params, z)
  return z, log_det_inv, x_back, log_det_fwd


@pytest.mark.parametrize("case", CASES)
def test_identity_at_init_and_round_trip(case):
  layer, x = LAYERS[case], _x()
  params = _params(layer, jax.random.key(2), x, 0.0)
  z, log_det_inv, x_back, log_det_fwd = _round_trip(layer, params, x)
  for y, log_det in ((z, log_det_inv), (x_back, log_det_fwd)):
    np.testing.assert_allclose(y, x, atol=1e-6)
    np.testing.assert_allclose(log_det, 0.0, atol=1e-5)
  params = _params(layer, jax.random.key(3), x, 0.1)
  z, log_det_inv, x_back, log_det_fwd = _round_trip(layer, params, x)
  assert float(jnp.max(jnp.abs(z - x))) > 1e-1  # the perturbation does something
  np.testing.assert_allclose(x_back, x, atol=1e-5)
  np.testing.assert_allclose(log_det_fwd, -log_det_inv, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_log_dets_match_the_jacobian_in_float64(case):
  layer = LAYERS[case]
  params = _params(layer, jax.random.key(4), _x(), 0.5)  # float32, then cast
  with jax.enable_x64(True):
    x = jnp.asarray(_x(), jnp.float64)
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)

    @jax.jit
    def check(params, v):
      out = []
      for method in (layer.forward_and_log_det, layer.inverse_and_log_det):
        jac = jax.vmap(jax.jacfwd(lambda u: method(params, u[None])[0][0]))(v)
        out.append((method(params, v)[1], jnp.linalg.slogdet(jac)[1]))
      return out

    for log_det, expected in check(params, x):
      np.testing.assert_allclose(log_det, expected, rtol=0, atol=1e-9)


def test_jit_vmap_and_one_sampling_loop():
  layer, x = LAYERS["affine"], _x()
  params = _params(layer, jax.random.key(5), x, 0.1)
  batched = jax.jit(layer.forward_and_log_det)(params, x)
  # vmap over examples (each a (D,) event) and over a stack of two parameter sets.
  per_example = jax.jit(jax.vmap(layer.forward_and_log_det, in_axes=(None, 0)))(params, x)
  np.testing.assert_allclose(per_example[0], batched[0], atol=1e-6)
  np.testing.assert_allclose(per_example[1], batched[1], atol=1e-5)
  stacked = jax.tree.map(lambda p: jnp.stack([p, 0 * p]), params)
  per_params = jax.jit(jax.vmap(layer.forward_and_log_det, in_axes=(0, None)))(stacked, x)
  np.testing.assert_allclose(per_params[0][0], batched[0], atol=1e-6)
  np.testing.assert_allclose(per_params[0][1], x, atol=1e-6)  # zero params: identity
  # Sampling is one loop over dimensions, not D unrolled network passes.
  jaxpr = jax.make_jaxpr(layer.forward_and_log_det)(params, x).jaxpr
  loops = [e for e in jaxpr.eqns if e.primitive.name in ("while", "scan")]
  assert len(loops) == 1


def test_one_dimension_is_an_elementwise_transform_with_constant_params():
  layer = maf.MAF(1, AFFINE, hidden=(4,))
  x = _x(dim=1)
  z, _, x_back, _ = _round_trip(layer, _params(layer, jax.random.key(6), x, 0.0), x)
  np.testing.assert_allclose(z, x, atol=1e-6)
  np.testing.assert_allclose(x_back, x, atol=1e-6)
  params = _params(layer, jax.random.key(6), x, 0.5)
  z, log_det_inv, x_back, log_det_fwd = _round_trip(layer, params, x)
  raw = jax.jit(layer.raw_params)(params, x)
  assert raw.shape == (6, 1, AFFINE.num_params)
  np.testing.assert_array_equal(raw, jnp.broadcast_to(raw[:1], raw.shape))  # no input dependence
  assert float(jnp.max(jnp.abs(z - x))) > 1e-1
  np.testing.assert_allclose(z[:, 0], AFFINE.inverse(raw[0, 0], x[:, 0])[0], atol=1e-6)
  np.testing.assert_allclose(x_back, x, atol=1e-5)
  np.testing.assert_allclose(log_det_fwd, -log_det_inv, atol=1e-5)


@pytest.mark.parametrize("kwargs, name", [
    (dict(dim=0), "dim"), (dict(dim=-2), "dim"), (dict(dim=2.0), "dim"), (dict(dim=True), "dim"),
    (dict(hidden=()), "hidden"), (dict(hidden=(8, 0)), "hidden"), (dict(hidden=8), "hidden"),
    (dict(transformer="affine"), "transformer"), (dict(reverse=1), "reverse"),
])
def test_bad_configuration_is_refused(kwargs, name):
  with pytest.raises(ValueError, match=name):
    maf.MAF(**{"dim": 3, "transformer": AFFINE, **kwargs})


def test_bad_arguments_are_refused():
  layer = maf.MAF(3, AFFINE, hidden=(4,))
  with pytest.raises(ValueError, match="x"):
    layer.init(jax.random.key(0), jnp.zeros((2, 4)))
  params = layer.init(jax.random.key(0), jnp.zeros((2, 3)))
  with pytest.raises(ValueError, match="z"):
    layer.forward(params, jnp.zeros((2, 4)))
  with pytest.raises(ValueError, match="order"):
    maf.made_masks(3, (4,), 2, (0, 1, 1))
  with pytest.raises(ValueError, match="num_inputs"):
    maf.made_masks(0, (4,), 2, ())
  with pytest.raises(ValueError, match="num_params"):
    maf.made_masks(3, (4,), 0, (0, 1, 2))
