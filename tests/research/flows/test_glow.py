"""Tests for research/flows/glow.py (ActNorm, LULinear / invertible 1x1 convolution)."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.flows import glow

LAYERS = [
    ("actnorm_vector", lambda: glow.ActNorm((5,))),
    ("actnorm_image", lambda: glow.ActNorm((3, 4, 2))),
    ("lu_vector", lambda: glow.LULinear((5,), seed=1)),
    ("conv1x1_image", lambda: glow.Invertible1x1Conv((3, 2, 6), seed=2)),
]
IDS = [name for name, _ in LAYERS]
MAKERS = [make for _, make in LAYERS]


# Compiled without XLA's expensive CPU passes: the same numbers, a fraction of the
# compile time on a shared 2-core machine.
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0,
                                                    "xla_llvm_disable_expensive_passes": True})


def _data(seed, shape, dtype=jnp.float32):
  """A batch with per-channel means and scales far from (0, 1) (numpy: no eager compiles)."""
  rng = np.random.default_rng(seed)
  c = shape[-1]
  x = 3.0 * rng.normal(size=c) + np.exp(rng.normal(size=c)) * rng.normal(size=shape)
  return jnp.asarray(x, dtype)


def _perturb(params, seed, scale=0.3):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda a: a + jnp.asarray(scale * rng.normal(size=a.shape), a.dtype), params)


def _setup(layer, batch=6, dtype=jnp.float32, seed=0):
  """Perturbed parameters (init from the batch, then moved off init) and the batch x."""
  x = _data(seed, (batch, *layer.event_shape), dtype)
  params = _perturb(_jit(layer.init)(jax.random.key(seed), x), seed + 1)
  return params, x


def _jitted(layer):
  return _jit(layer.forward_and_log_det), _jit(layer.inverse_and_log_det)


@pytest.mark.parametrize("make", MAKERS, ids=IDS)
def test_round_trip(make):
  layer = make()
  params, x = _setup(layer)
  forward, inverse = _jitted(layer)
  z = inverse(params, x)[0]
  assert z.shape == x.shape and z.dtype == jnp.float32
  np.testing.assert_allclose(forward(params, z)[0], x, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(inverse(params, forward(params, z)[0])[0], z, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", MAKERS, ids=IDS)
def test_log_det_matches_jacobian_float64(make):
  layer = make()
  size = math.prod(layer.event_shape)
  with jax.enable_x64(True):
    params, x = _setup(layer, batch=2, dtype=jnp.float64)
    for method in (layer.inverse_and_log_det, layer.forward_and_log_det):

      @_jit
      @jax.vmap
      def jacobian_and_log_det(example, method=method):
        flat_map = lambda v: method(params, v.reshape(layer.event_shape))[0].reshape(-1)
        return jax.jacfwd(flat_map)(example.reshape(-1)), method(params, example)[1]

      jacobians, log_dets = jacobian_and_log_det(x)
      assert jacobians.shape == (2, size, size)
      assert log_dets.shape == (2,) and log_dets.dtype == jnp.float64
      _, expected = np.linalg.slogdet(np.asarray(jacobians))
      np.testing.assert_allclose(log_dets, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("make", MAKERS, ids=IDS)
def test_forward_log_det_is_minus_inverse_log_det(make):
  layer = make()
  params, _ = _setup(layer)
  forward, inverse = _jitted(layer)
  z = _data(5, (4, *layer.event_shape))
  x, fwd_log_det = forward(params, z)
  _, inv_log_det = inverse(params, x)
  assert fwd_log_det.shape == inv_log_det.shape == (4,)
  assert float(jnp.max(jnp.abs(fwd_log_det))) > 0.1  # perturbed: not volume preserving
  np.testing.assert_allclose(fwd_log_det, -inv_log_det, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("event_shape", [(5,), (4, 3, 3)])
def test_actnorm_init_standardises_its_batch(event_shape):
  layer = glow.ActNorm(event_shape)
  x = _data(1, (16, *event_shape))
  params = layer.init(jax.random.key(0), x)  # eager, and under jit below
  assert params["loc"].shape == params["log_scale"].shape == (event_shape[-1],)
  z, log_det = _jit(layer.inverse_and_log_det)(params, x)
  axes = tuple(range(z.ndim - 1))
  np.testing.assert_allclose(np.mean(z, axis=axes), 0.0, atol=1e-5)
  np.testing.assert_allclose(np.var(z, axis=axes), 1.0, rtol=1e-5)
  positions = math.prod(event_shape[:-1])
  np.testing.assert_allclose(log_det, -positions * np.sum(params["log_scale"]), rtol=1e-6)
  jitted = _jit(layer.init)(jax.random.key(0), x)
  np.testing.assert_allclose(jitted["log_scale"], params["log_scale"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("event_shape", [(6,), (2, 3, 5)])
def test_lu_linear_starts_as_a_rotation(event_shape):
  layer = glow.LULinear(event_shape, seed=4)
  x = _data(0, (3, *event_shape))
  params = _jit(layer.init)(jax.random.key(1), x)
  assert set(params) == {"lower", "upper", "log_s"}  # the permutation is static, not a param
  w = np.asarray(layer.weight(params))
  c = event_shape[-1]
  np.testing.assert_allclose(w @ w.T, np.eye(c), atol=1e-5)
  assert np.max(np.abs(w - np.eye(c))) > 0.1
  assert np.max(np.abs(params["lower"])) <= 1.0 + 1e-6  # pivoted LU
  z, log_det = _jit(layer.inverse_and_log_det)(params, x)
  np.testing.assert_allclose(log_det, 0.0, atol=1e-4)
  np.testing.assert_allclose(np.sum(z**2), np.sum(x**2), rtol=1e-5)


def test_lu_linear_weight_is_p_l_u_and_ignores_masked_entries():
  layer = glow.LULinear((4,), seed=3)
  assert layer.permutation != glow.LULinear((4,), seed=5).permutation
  assert sorted(layer.permutation) == [0, 1, 2, 3]
  params, _ = _setup(layer)
  p = np.eye(4)[list(layer.permutation)]
  lower = np.tril(params["lower"], -1) + np.eye(4)
  upper = np.triu(params["upper"], 1) + np.diag(np.exp(params["log_s"]))
  np.testing.assert_allclose(layer.weight(params), p @ lower @ upper, rtol=1e-6, atol=1e-6)
  forward, inverse = _jitted(layer)
  z = _data(2, (3, 4))
  np.testing.assert_allclose(forward(params, z)[0], z @ (p @ lower @ upper).T,
                             rtol=1e-5, atol=1e-5)
  noisy = dict(params, lower=params["lower"] + np.triu(np.ones((4, 4), np.float32)),
               upper=params["upper"] + np.tril(np.ones((4, 4), np.float32)))
  np.testing.assert_array_equal(forward(noisy, z)[0], forward(params, z)[0])
  np.testing.assert_array_equal(inverse(noisy, z)[0], inverse(params, z)[0])


def test_invertible_1x1_conv_is_a_1x1_convolution():
  layer = glow.Invertible1x1Conv((4, 5, 3), seed=0)
  params, x = _setup(layer, batch=2)
  w = layer.weight(params)
  kernel = w.T[None, None]  # HWIO: out_i = sum_j W_ij in_j
  expected = jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID",
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))
  x_out, log_det = _jit(layer.forward_and_log_det)(params, x)
  np.testing.assert_allclose(x_out, expected, rtol=1e-5, atol=1e-5)
  _, w_log_det = np.linalg.slogdet(np.asarray(w, np.float64))
  np.testing.assert_allclose(log_det, 4 * 5 * w_log_det, rtol=1e-4)


@pytest.mark.parametrize("make", MAKERS, ids=IDS)
def test_jit_and_vmap(make):
  layer = make()
  params, x = _setup(layer)
  for method in (layer.inverse_and_log_det, layer.forward_and_log_det):
    out, log_det = method(params, x)  # eager
    out_j, log_det_j = _jit(method)(params, x)
    np.testing.assert_allclose(out_j, out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_det_j, log_det, rtol=1e-5, atol=1e-5)
    out_v, log_det_v = _jit(jax.vmap(method, in_axes=(None, 0)))(params, x)  # unbatched
    assert log_det_v.shape == (x.shape[0],)
    np.testing.assert_allclose(out_v, out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_det_v, log_det, rtol=1e-5, atol=1e-5)
  # vmap over seeds: one parameter set per key, as a trainer vmaps init.
  keys = jax.random.split(jax.random.key(9), 3)
  stacked = _jit(jax.vmap(layer.init, in_axes=(0, None)))(keys, x)
  out_s, _ = _jit(jax.vmap(layer.inverse_and_log_det, in_axes=(0, None)))(stacked, x)
  second = _jit(layer.init)(keys[1], x)
  np.testing.assert_allclose(out_s[1], _jit(layer.inverse)(second, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [glow.ActNorm, glow.LULinear, glow.Invertible1x1Conv])
@pytest.mark.parametrize("event_shape", [(), (0,), (3, -2), (2.0,), (True,), None])
def test_bad_event_shape(cls, event_shape):
  with pytest.raises(ValueError, match="event_shape"):
    cls(event_shape)


@pytest.mark.parametrize("make", MAKERS, ids=IDS)
def test_bad_input_shape(make):
  layer = make()
  params, x = _setup(layer)
  wrong = jnp.zeros((*x.shape[:-1], x.shape[-1] + 1))
  with pytest.raises(ValueError, match="^x must"):
    layer.inverse_and_log_det(params, wrong)
  with pytest.raises(ValueError, match="^z must"):
    layer.forward_and_log_det(params, wrong)
  with pytest.raises(ValueError, match="^x must"):
    layer.init(jax.random.key(0), wrong)


def test_bad_arguments():
  with pytest.raises(ValueError, match="^x must be a batch"):
    glow.ActNorm((3,)).init(jax.random.key(0), jnp.ones((3,)))
  with pytest.raises(ValueError, match="eps"):
    glow.ActNorm((3,), eps=0.0)
  for seed in (-1, 1.5, True):
    with pytest.raises(ValueError, match="seed"):
      glow.LULinear((3,), seed=seed)
