"""Tests for research/flows/permutations.py (fixed permutations of the last axis)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.flows import permutations


@pytest.mark.parametrize("event_shape", [(5,), (2, 3, 4)])
def test_round_trip_and_zero_log_det(event_shape):
  perm = permutations.random_permutation(3, event_shape[-1])
  layer = permutations.Permute(event_shape, perm)
  z = jax.random.normal(jax.random.key(0), (7, *event_shape))
  x, fwd_log_det = layer.forward_and_log_det({}, z)
  np.testing.assert_array_equal(x, z[..., jnp.asarray(perm)])
  z_back, inv_log_det = layer.inverse_and_log_det({}, x)
  np.testing.assert_array_equal(z_back, z)
  np.testing.assert_array_equal(layer.forward({}, layer.inverse({}, z)), z)
  for log_det in (fwd_log_det, inv_log_det):
    assert log_det.shape == (7,)
    np.testing.assert_array_equal(log_det, 0.0)


def test_inverse_permutation_undoes_permutation():
  layer = permutations.Permute((4,), (2, 0, 3, 1))
  assert layer.inverse_permutation == (1, 3, 0, 2)
  x = jnp.arange(4.0)
  np.testing.assert_array_equal(layer.forward({}, x), [2.0, 0.0, 3.0, 1.0])
  np.testing.assert_array_equal(layer.inverse({}, layer.forward({}, x)), x)
  assert layer.inverse_and_log_det({}, x)[1].shape == ()


def test_reverse():
  layer = permutations.Reverse((2, 2, 3))
  assert layer.permutation == (2, 1, 0)
  x = jax.random.normal(jax.random.key(1), (2, 2, 2, 3))
  np.testing.assert_array_equal(layer.inverse({}, x), x[..., ::-1])
  np.testing.assert_array_equal(layer.forward({}, layer.inverse({}, x)), x)
  assert layer == permutations.Reverse((2, 2, 3))
  hash(layer)


def test_jit_and_vmap():
  layer = permutations.Permute((3,), (1, 2, 0))
  x = jax.random.normal(jax.random.key(2), (4, 3))
  z, log_det = jax.jit(layer.inverse_and_log_det)({}, x)
  np.testing.assert_array_equal(z, layer.inverse({}, x))
  z_v, log_det_v = jax.vmap(layer.inverse_and_log_det, in_axes=(None, 0))({}, x)
  np.testing.assert_array_equal(z_v, z)
  np.testing.assert_array_equal(log_det_v, log_det)


def test_random_permutation_is_deterministic():
  perm = permutations.random_permutation(0, 10)
  assert isinstance(perm, tuple) and all(type(i) is int for i in perm)
  assert sorted(perm) == list(range(10))
  assert perm == permutations.random_permutation(0, 10)
  assert perm != permutations.random_permutation(1, 10)
  with pytest.raises(ValueError, match="seed"):
    permutations.random_permutation(-1, 3)
  with pytest.raises(ValueError, match="size"):
    permutations.random_permutation(0, 0)


@pytest.mark.parametrize("perm", [(0, 0, 1), (0, 1), (0, 1, 3), (0, 1, 2.0), (0, 1, True), 3])
def test_bad_permutation(perm):
  with pytest.raises(ValueError, match="permutation"):
    permutations.Permute((3,), perm)


@pytest.mark.parametrize("event_shape", [(), (0,), (3, -1), "ab", None, (2.0,)])
def test_bad_event_shape(event_shape):
  with pytest.raises(ValueError, match="event_shape"):
    permutations.Permute(event_shape, (0,))
  with pytest.raises(ValueError, match="event_shape"):
    permutations.Reverse(event_shape)


def test_bad_input_shape():
  layer = permutations.Permute((3,), (2, 1, 0))
  with pytest.raises(ValueError, match="^x must"):
    layer.inverse({}, jnp.zeros((2, 4)))
  with pytest.raises(ValueError, match="^z must"):
    layer.forward({}, jnp.zeros((2, 4)))
