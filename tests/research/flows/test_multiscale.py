"""Tests for research/flows/multiscale.py (Squeeze, Split, Flatten) and a 2-level image flow."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.flows import conditioners, coupling, glow, multiscale, transformers
from research.flows.bijectors import Chain


# The whole-flow functions compile without XLA's expensive CPU passes: the same numbers,
# a fraction of the compile time on a shared 2-core machine.
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0,
                                                    "xla_llvm_disable_expensive_passes": True})


def _data(seed, shape, dtype=jnp.float32):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), dtype)


def _perturb(params, seed, scale=0.2):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda a: a + jnp.asarray(scale * rng.normal(size=a.shape), a.dtype), params)


def test_squeeze_layout_and_shapes():
  layer = multiscale.Squeeze((4, 6, 3))
  assert layer.inverse_shape((4, 6, 3)) == (2, 3, 12)
  assert layer.forward_shape((2, 3, 12)) == (4, 6, 3)
  assert layer.event_ndim == layer.latent_event_ndim() == 3
  x = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
  z, log_det = layer.inverse_and_log_det({}, jnp.asarray(x))
  z = np.asarray(z)
  assert z.shape == (2, 2, 3, 12) and log_det.shape == (2,)
  np.testing.assert_array_equal(log_det, 0.0)
  for i, j, c, a, b in np.ndindex(2, 3, 3, 2, 2):
    np.testing.assert_array_equal(z[:, i, j, 4 * c + 2 * a + b], x[:, 2 * i + a, 2 * j + b, c])
  x_back, fwd_log_det = layer.forward_and_log_det({}, z)
  np.testing.assert_array_equal(x_back, x)
  np.testing.assert_array_equal(fwd_log_det, 0.0)
  # Unbatched and extra batch axes.
  np.testing.assert_array_equal(layer.inverse({}, jnp.asarray(x[0])), z[0])
  np.testing.assert_array_equal(layer.forward({}, z.reshape(1, 2, 2, 3, 12)),
                                x.reshape(1, 2, 4, 6, 3))


def test_flatten():
  layer = multiscale.Flatten((2, 3, 4))
  assert layer.inverse_shape((2, 3, 4)) == (24,) and layer.latent_event_ndim() == 1
  x = _data(0, (5, 2, 3, 4))
  z, log_det = layer.inverse_and_log_det({}, x)
  np.testing.assert_array_equal(z, x.reshape(5, 24))
  np.testing.assert_array_equal(log_det, np.zeros(5))
  np.testing.assert_array_equal(layer.forward({}, z), x)


@pytest.mark.parametrize("event_shape", [(4, 4, 4), (2, 2, 3)])
def test_split_factors_out_the_first_half(event_shape):
  h, w, c = event_shape
  k = c // 2
  inner = multiscale.Squeeze((h, w, c - k))
  layer = multiscale.Split(event_shape, inner)
  assert layer.inverse_shape(event_shape) == (h * w * c,)
  assert layer.forward_shape((h * w * c,)) == event_shape
  assert layer.event_ndim == 3 and layer.latent_event_ndim() == 1
  x = _data(1, (3, *event_shape))
  z, log_det = layer.inverse_and_log_det(layer.init(jax.random.key(0), x), x)
  assert z.shape == (3, h * w * c) and log_det.shape == (3,)
  np.testing.assert_array_equal(z[:, :h * w * k], x[..., :k].reshape(3, -1))
  np.testing.assert_array_equal(z[:, h * w * k:], inner.inverse({}, x[..., k:]).reshape(3, -1))
  np.testing.assert_array_equal(layer.forward({}, z), x)


def test_nested_splits():
  # (4, 4, 4): 2 channels out, 2 on -> squeeze (2, 2, 8): 4 out, 4 on -> flatten.
  inner = Chain([multiscale.Split((2, 2, 8), multiscale.Flatten((2, 2, 4))),
                 multiscale.Squeeze((4, 4, 2))])
  layer = multiscale.Split((4, 4, 4), inner)
  assert inner.inverse_shape((4, 4, 2)) == (32,) and layer.inverse_shape((4, 4, 4)) == (64,)
  x = _data(5, (2, 4, 4, 4))
  params = layer.init(jax.random.key(0), x)
  assert params == ({}, {})  # the inner Chain's, one entry per layer
  z = layer.inverse(params, x)
  assert z.shape == (2, 64)
  squeezed = multiscale.Squeeze((4, 4, 2)).inverse({}, x[..., 2:])
  np.testing.assert_array_equal(z[:, 32:48], squeezed[..., :4].reshape(2, 16))
  np.testing.assert_array_equal(layer.forward(params, z), x)


def _conv_coupling(event_shape, parity):
  return coupling.Coupling(event_shape, transformers.Affine(), conditioners.Conv(8), parity)


def _two_level_flow():
  """(8, 8, 1) -> squeeze (4, 4, 4) -> actnorm, 1x1, couplings -> split: 2 channels out,
  2 on -> squeeze (2, 2, 8) -> actnorm, 1x1, couplings; latent (64,). Chain order is
  generative (layers[0] next to the latent), so the list reads the inverse backwards."""
  inner = Chain([_conv_coupling((2, 2, 8), 1), _conv_coupling((2, 2, 8), 0),
                 glow.Invertible1x1Conv((2, 2, 8), seed=1), glow.ActNorm((2, 2, 8)),
                 multiscale.Squeeze((4, 4, 2))])
  return Chain([multiscale.Split((4, 4, 4), inner),
                _conv_coupling((4, 4, 4), 1), _conv_coupling((4, 4, 4), 0),
                glow.Invertible1x1Conv((4, 4, 4), seed=0), glow.ActNorm((4, 4, 4)),
                multiscale.Squeeze((8, 8, 1))])


@pytest.fixture(scope="module")
def flow_setup():
  flow = _two_level_flow()
  x = 2.0 + 3.0 * _data(2, (4, 8, 8, 1))
  init_params = _jit(flow.init)(jax.random.key(0), x)
  return flow, init_params, _perturb(init_params, 3), x


def test_multiscale_shapes(flow_setup):
  flow, _, params, x = flow_setup
  assert flow.inverse_shape((8, 8, 1)) == (64,)
  assert flow.forward_shape((64,)) == (8, 8, 1)
  assert flow.event_ndim == 3 and flow.latent_event_ndim() == 1
  z, log_det = _jit(flow.inverse_and_log_det)(params, x)
  assert z.shape == (4, 64) and log_det.shape == (4,)


def test_multiscale_init_sees_real_activations(flow_setup):
  flow, init_params, _, x = flow_setup
  # Chain.init threads x through the inverse: the outer ActNorm standardises squeeze(x).
  squeezed = multiscale.Squeeze((8, 8, 1)).inverse({}, x)
  standardised = flow.layers[4].inverse(init_params[4], squeezed)
  np.testing.assert_allclose(np.mean(standardised, axis=(0, 1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(np.var(standardised, axis=(0, 1, 2)), 1.0, rtol=1e-4)


def test_multiscale_round_trip(flow_setup):
  flow, _, params, x = flow_setup
  z = _jit(flow.inverse)(params, x)
  assert float(jnp.max(jnp.abs(z - x.reshape(4, 64)))) > 0.1  # not the identity
  np.testing.assert_allclose(_jit(flow.forward)(params, z), x, rtol=1e-5, atol=1e-4)


def test_multiscale_forward_log_det_is_minus_inverse(flow_setup):
  flow, _, params, _ = flow_setup
  z = _data(4, (4, 64))
  x, fwd_log_det = _jit(flow.forward_and_log_det)(params, z)
  assert x.shape == (4, 8, 8, 1)
  _, inv_log_det = _jit(flow.inverse_and_log_det)(params, x)
  assert float(jnp.max(jnp.abs(fwd_log_det))) > 0.1
  np.testing.assert_allclose(fwd_log_det, -inv_log_det, rtol=1e-5, atol=1e-4)


def test_multiscale_log_det_matches_jacobian_float64(flow_setup):
  flow, _, params, x = flow_setup
  with jax.enable_x64(True):
    params64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
    x64 = jnp.asarray(x[:2], jnp.float64)
    for method, shape in ((flow.inverse_and_log_det, (8, 8, 1)),
                          (flow.forward_and_log_det, (64,))):

      @_jit
      @jax.vmap
      def jacobian_and_log_det(example, method=method, shape=shape):
        flat_map = lambda v: method(params64, v.reshape(shape))[0].reshape(-1)
        return jax.jacfwd(flat_map)(example.reshape(-1)), method(params64, example)[1]

      inputs = x64 if shape == (8, 8, 1) else _jit(flow.inverse)(params64, x64)
      jacobians, log_dets = jacobian_and_log_det(inputs)
      assert jacobians.shape == (2, 64, 64) and log_dets.dtype == jnp.float64
      sign, expected = np.linalg.slogdet(np.asarray(jacobians))
      assert np.all(sign != 0)
      np.testing.assert_allclose(log_dets, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("make", [
    lambda: multiscale.Squeeze((3, 4, 1)),
    lambda: multiscale.Squeeze((4, 5, 1)),
    lambda: multiscale.Squeeze((4, 4)),
    lambda: multiscale.Squeeze((4, 4, 0)),
    lambda: multiscale.Flatten(()),
    lambda: multiscale.Flatten((2, -1)),
    lambda: multiscale.Split((4, 4, 1), multiscale.Flatten((4, 4, 1))),
    lambda: multiscale.Split((4, 4), multiscale.Flatten((4, 4, 1))),
])
def test_bad_event_shape(make):
  with pytest.raises(ValueError, match="event_shape"):
    make()


@pytest.mark.parametrize("inner", [
    None,
    multiscale.Squeeze((4, 4, 4)),
    multiscale.Flatten((4, 4)),
    _conv_coupling((4, 4, 3), 0),
    Chain([_conv_coupling((2, 2, 8), 0), multiscale.Squeeze((4, 4, 4))]),
])
def test_split_refuses_a_mismatched_inner(inner):
  with pytest.raises(ValueError, match="inner"):
    multiscale.Split((4, 4, 4), inner)


def test_bad_input_shapes():
  squeeze = multiscale.Squeeze((4, 4, 2))
  with pytest.raises(ValueError, match="^x must"):
    squeeze.inverse({}, jnp.zeros((1, 4, 4, 3)))
  with pytest.raises(ValueError, match="^z must"):
    squeeze.forward({}, jnp.zeros((1, 4, 4, 2)))
  with pytest.raises(ValueError, match="event_shape"):
    squeeze.inverse_shape((8, 8, 2))
  split = multiscale.Split((4, 4, 2), multiscale.Squeeze((4, 4, 1)))
  with pytest.raises(ValueError, match="^x must"):
    split.inverse({}, jnp.zeros((1, 4, 4, 3)))
  with pytest.raises(ValueError, match="^z must"):
    split.forward({}, jnp.zeros((1, 31)))
  with pytest.raises(ValueError, match="^x must"):
    split.init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)))
