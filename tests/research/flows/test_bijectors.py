"""Tests for the bijector interface (research/flows/bijectors.py), the affine transformer,
the conditioners and the coupling layer (research/flows/coupling.py)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.flows import conditioners as cond
from research.flows.bijectors import Chain, Inverse
from research.flows.coupling import Coupling
from research.flows.transformers import Affine


def perturb(params, key, scale=0.3):
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(tree, [a + scale * jax.random.normal(k, a.shape, a.dtype)
                                   for a, k in zip(leaves, keys)])


def vector_chain(dim=4):
  return Chain(tuple(Coupling((dim,), Affine(), cond.MLP((16, 16)), parity=i % 2)
                     for i in range(3)))


def image_chain():
  return Chain(tuple(Coupling((4, 4, 4), Affine(), cond.Conv(8), parity=i % 2) for i in range(2)))


def test_coupling_is_identity_at_init():
  bij = vector_chain()
  x = jax.random.normal(jax.random.key(0), (7, 4))
  params = bij.init(jax.random.key(1), x)
  z, log_det = bij.inverse_and_log_det(params, x)
  np.testing.assert_array_equal(z, x)
  np.testing.assert_array_equal(log_det, np.zeros(7))


@pytest.mark.parametrize("make,shape", [(vector_chain, (4,)), (image_chain, (4, 4, 4))])
def test_log_det_matches_jacobian_float64(make, shape):
  with jax.enable_x64(True):
    bij = make()
    x = jax.random.normal(jax.random.key(0), (3, *shape), jnp.float64)
    params = perturb(bij.init(jax.random.key(1), x), jax.random.key(2))
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
    z, log_det = bij.inverse_and_log_det(params, x)
    d = int(np.prod(shape))
    flat = lambda v: bij.inverse(params, v.reshape(1, *shape)).reshape(d)  # noqa: E731
    jac = jax.vmap(jax.jacfwd(flat))(x.reshape(3, d))
    np.testing.assert_allclose(log_det, jnp.linalg.slogdet(jac)[1], atol=1e-10)
    x_back, fwd_log_det = bij.forward_and_log_det(params, z)
    np.testing.assert_allclose(x_back, x, atol=1e-12)
    np.testing.assert_allclose(fwd_log_det, -log_det, atol=1e-12)


def test_round_trip_float32():
  bij = vector_chain()
  x = 2.0 * jax.random.normal(jax.random.key(0), (256, 4))
  params = perturb(bij.init(jax.random.key(1), x), jax.random.key(2), 0.1)
  np.testing.assert_allclose(bij.forward(params, bij.inverse(params, x)), x, rtol=1e-5,
                             atol=1e-5)


def test_affine_scale_is_bounded():
  tau = Affine(scale_bound=2.0)
  raw = jnp.array([[0.0, 1e6], [0.0, -1e6], [1.0, 0.0]])
  y, log_det = tau.forward(raw, jnp.ones(3))
  np.testing.assert_allclose(log_det, [2.0, -2.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(y, [np.exp(2.0), np.exp(-2.0), 2.0], rtol=1e-6)
  x, inv_log_det = tau.inverse(raw, y)
  np.testing.assert_allclose(x, np.ones(3), rtol=1e-6)
  np.testing.assert_allclose(inv_log_det, -log_det)


def test_inverse_swaps_directions():
  bij = vector_chain()
  x = jax.random.normal(jax.random.key(0), (5, 4))
  params = perturb(bij.init(jax.random.key(1), x), jax.random.key(2))
  inv = Inverse(bij)
  y, log_det = inv.forward_and_log_det(params, x)
  z, expect = bij.inverse_and_log_det(params, x)
  np.testing.assert_array_equal(y, z)
  np.testing.assert_array_equal(log_det, expect)
  np.testing.assert_array_equal(inv.inverse(params, y), bij.forward(params, z))


def test_chain_order_is_layers_first_to_last_in_forward():
  a = Coupling((2,), Affine(), cond.MLP((8,)), parity=0)
  b = Coupling((2,), Affine(), cond.MLP((8,)), parity=1)
  z = jax.random.normal(jax.random.key(0), (4, 2))
  pa = perturb(a.init(jax.random.key(1), z), jax.random.key(2))
  pb = perturb(b.init(jax.random.key(3), z), jax.random.key(4))
  chained = Chain((a, b)).forward(((pa, pb)), z)
  np.testing.assert_allclose(chained, b.forward(pb, a.forward(pa, z)), atol=1e-6)


class VariantTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_jit_and_vmap_variants(self):
    bij = vector_chain()
    x = jax.random.normal(jax.random.key(0), (6, 4))
    params = perturb(bij.init(jax.random.key(1), x), jax.random.key(2))
    z, log_det = self.variant(bij.inverse_and_log_det)(params, x)
    z_v, log_det_v = jax.vmap(bij.inverse_and_log_det, in_axes=(None, 0))(params, x)
    np.testing.assert_allclose(z, z_v, atol=1e-6)
    np.testing.assert_allclose(log_det, log_det_v, atol=1e-5)


def test_vmap_over_params():
  bij = vector_chain()
  x = jax.random.normal(jax.random.key(0), (6, 4))
  keys = jax.random.split(jax.random.key(1), 3)
  params = jax.vmap(lambda k: perturb(bij.init(k, x), k))(keys)
  z = jax.vmap(bij.inverse, in_axes=(0, None))(params, x)
  assert z.shape == (3, 6, 4)
  np.testing.assert_allclose(z[1], bij.inverse(jax.tree.map(lambda a: a[1], params), x),
                             atol=1e-6)


def test_bad_input():
  with pytest.raises(ValueError, match="event_shape"):
    Coupling((1,), Affine(), cond.MLP((8,)))
  with pytest.raises(ValueError, match="event_shape"):
    Coupling((4, 4), Affine(), cond.MLP((8,)))
  with pytest.raises(ValueError, match="parity"):
    Coupling((4,), Affine(), cond.MLP((8,)), parity=2)
  with pytest.raises(ValueError, match="conditioner"):
    Coupling((4,), Affine(), cond.Conv(8))
  with pytest.raises(ValueError, match="transformer"):
    Coupling((4,), "affine", cond.MLP((8,)))
  with pytest.raises(ValueError, match="hidden"):
    cond.MLP(())
  with pytest.raises(ValueError, match="scale_bound"):
    Affine(scale_bound=0.0)
  with pytest.raises(ValueError, match="layers"):
    Chain(())
  with pytest.raises(ValueError, match=r"layers\[1\]"):
    Chain((vector_chain(), "not a bijector"))
  bij = vector_chain()
  params = bij.init(jax.random.key(0), jnp.zeros((2, 4)))
  with pytest.raises(ValueError, match="x must end in the event shape"):
    bij.inverse(params, jnp.zeros((2, 3)))
  with pytest.raises(ValueError, match="z must end in the event shape"):
    bij.forward(params, jnp.zeros((2, 5)))
