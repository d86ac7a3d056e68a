"""Tests for research/flows/distribution.py, elementwise.py, samplers.py and architectures.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.flows import architectures, samplers
from research.flows import conditioners as cond
from research.flows.bijectors import Chain
from research.flows.coupling import Coupling
from research.flows.distribution import Flow
from research.flows.elementwise import LogitTransform
from research.flows.transformers import Affine
from tests.research.flows.test_bijectors import perturb


def toy_flow(scale=0.5):
  bij = Chain(tuple(Coupling((2,), Affine(), cond.MLP((16,)), parity=i % 2) for i in range(4)))
  flow = Flow(bij, (2,))
  x = jax.random.normal(jax.random.key(0), (16, 2))
  return flow, perturb(flow.init(jax.random.key(1), x), jax.random.key(2), scale)


def test_log_prob_integrates_to_the_sampled_mass():
  # The mass of exp(log_prob) on a box (midpoint rule) equals the fraction of the flow's
  # own samples in that box: log_prob is normalised and consistent with sample.
  flow, params = toy_flow()
  axis = np.linspace(-6.0, 6.0, 801)
  xx, yy = np.meshgrid(axis, axis)
  grid = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1), jnp.float32)
  mass = float(jnp.sum(jnp.exp(flow.log_prob(params, grid)))) * (axis[1] - axis[0]) ** 2
  x = np.asarray(flow.sample(params, jax.random.key(5), 200_000))
  inside = float(np.mean(np.all(np.abs(x) <= 6.0 + (axis[1] - axis[0]) / 2, axis=1)))
  assert 0.5 < inside < 0.999                    # the box cuts the tails: a real check
  assert abs(mass - inside) < 0.01, (mass, inside)


def test_identity_flow_is_standard_normal():
  flow = Flow(Chain((Coupling((2,), Affine(), cond.MLP((8,))),)), (2,))
  x = jax.random.normal(jax.random.key(0), (5, 2))
  params = flow.init(jax.random.key(1), x)
  expect = jax.scipy.stats.norm.logpdf(x).sum(-1)
  np.testing.assert_allclose(flow.log_prob(params, x), expect, rtol=1e-6)


def test_sample_and_log_prob_agree_with_log_prob():
  flow, params = toy_flow(0.2)
  x, log_p = flow.sample_and_log_prob(params, jax.random.key(3), 64)
  np.testing.assert_allclose(log_p, flow.log_prob(params, x), atol=2e-4)
  np.testing.assert_array_equal(x, flow.sample(params, jax.random.key(3), 64))


def test_rsample_gradient_matches_finite_differences():
  with jax.enable_x64(True):
    flow, params = toy_flow()
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
    key = jax.random.key(4)

    def objective(p):
      x = flow.rsample(p, key, 32)
      return jnp.mean(jnp.sum(jnp.square(x - 1.0), -1))

    grads = jax.grad(objective)(params)
    leaves, tree = jax.tree.flatten(params)
    g_leaves = jax.tree.leaves(grads)
    rng = np.random.default_rng(0)
    checked = 0
    for i, (leaf, g) in enumerate(zip(leaves, g_leaves)):
      idx = tuple(rng.integers(0, s) for s in leaf.shape)
      eps = 1e-6
      def shifted(delta, i=i, idx=idx):
        new = list(leaves)
        new[i] = leaves[i].at[idx].add(delta)
        return objective(jax.tree.unflatten(tree, new))
      fd = (shifted(eps) - shifted(-eps)) / (2 * eps)
      np.testing.assert_allclose(g[idx], fd, rtol=1e-5, atol=1e-8)
      checked += 1
    assert checked == len(leaves)
    # sample is the same value with no gradient
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(
        jax.grad(lambda p: jnp.sum(flow.sample(p, key, 8)))(params)))


def test_temperature_scales_the_latent():
  flow = Flow(Chain((Coupling((2,), Affine(), cond.MLP((8,))),)), (2,))
  params = flow.init(jax.random.key(1), jnp.zeros((4, 2)))
  cold = flow.sample(params, jax.random.key(0), 4096, temperature=0.5)
  np.testing.assert_allclose(np.std(np.asarray(cold), 0), [0.5, 0.5], rtol=0.05)
  x = samplers.get("exact")(jax.random.key(0), flow, params, 8, temperature=0.5)
  np.testing.assert_array_equal(x, flow.sample(params, jax.random.key(0), 8, temperature=0.5))
  assert samplers.spec("exact").count_nfe(None) == 1


def test_logit_transform_round_trip_and_log_det():
  with jax.enable_x64(True):
    bij = LogitTransform(event_ndim=1, alpha=0.05)
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (5, 3)))
    z, log_det = bij.inverse_and_log_det({}, x)
    jac = jax.vmap(jax.jacfwd(lambda v: bij.inverse({}, v)))(x)
    np.testing.assert_allclose(log_det, jnp.linalg.slogdet(jac)[1], atol=1e-10)
    x_back, fwd = bij.forward_and_log_det({}, z)
    np.testing.assert_allclose(x_back, x, atol=1e-12)
    np.testing.assert_allclose(fwd, -log_det, atol=1e-12)
  with pytest.raises(ValueError, match="alpha"):
    LogitTransform(alpha=0.5)


def test_flow_bad_input():
  flow, params = toy_flow()
  with pytest.raises(ValueError, match="x must end in the event shape"):
    flow.log_prob(params, jnp.zeros((3, 3)))
  with pytest.raises(ValueError, match="n must be"):
    flow.sample(params, jax.random.key(0), 0)
  with pytest.raises(ValueError, match="temperature"):
    flow.sample(params, jax.random.key(0), 3, temperature=0.0)
  with pytest.raises(ValueError, match="event_shape"):
    Flow(flow.bijector, (2, 2))
  with pytest.raises(ValueError, match="bijector"):
    Flow("realnvp", (2,))
  with pytest.raises(ValueError, match="temperature"):
    samplers.spec("exact").parse_options("temperature=-1")


@pytest.mark.parametrize("arch", architectures.VECTOR_ARCHS)
def test_vector_architectures_start_near_identity_and_invert(arch):
  bij = architectures.vector_flow(arch, 2, num_layers=2, hidden=(16,))
  flow = Flow(bij, (2,))
  x = jax.random.normal(jax.random.key(0), (64, 2)) * 2 + 1
  params = flow.init(jax.random.key(1), x)
  params = perturb(params, jax.random.key(2), 0.05)
  z = bij.inverse(params, x)
  np.testing.assert_allclose(bij.forward(params, z), x, atol=1e-4)
  assert np.all(np.isfinite(np.asarray(flow.log_prob(params, x))))


def test_image_architecture_shapes_and_round_trip():
  bij = architectures.image_flow((8, 8, 1), num_scales=2, steps_per_scale=1, hidden=8)
  flow = Flow(bij, (8, 8, 1))
  x = jax.random.uniform(jax.random.key(0), (16, 8, 8, 1), minval=0.01, maxval=0.99)
  params = perturb(flow.init(jax.random.key(1), x), jax.random.key(2), 0.02)
  assert flow.latent_shape == (64,)
  z = bij.inverse(params, x)
  assert z.shape == (16, 64)
  np.testing.assert_allclose(bij.forward(params, z), x, atol=1e-4)
  assert flow.sample(params, jax.random.key(3), 5).shape == (5, 8, 8, 1)


def test_architecture_bad_input():
  with pytest.raises(ValueError, match="arch"):
    architectures.vector_flow("nice", 2)
  with pytest.raises(ValueError, match="num_layers"):
    architectures.vector_flow("realnvp", 2, num_layers=0)
  with pytest.raises(ValueError, match="num_scales"):
    architectures.image_flow((8, 8, 1), num_scales=4)
  with pytest.raises(ValueError, match="transformer"):
    architectures.image_flow((8, 8, 1), transformer_name="nice")
