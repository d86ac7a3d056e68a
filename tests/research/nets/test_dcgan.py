"""DCGAN generator / critic: shapes and seeds, tanh range, no batch coupling, conditioning, jit/vmap, gradients, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.nets.dcgan import DCGANCritic, DCGANGenerator, seed_shape
from research.nets.mlp import functional

SHAPE = (16, 16, 1)


def build(cls, *args, **kwargs):
  """(initial params, apply) with the initialisers run under one jit (an rbg key compiles fast)."""
  make = lambda: cls(*args, **kwargs, rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))
  _, apply = functional(nnx.eval_shape(make))
  return jax.jit(lambda: functional(make())[0])(), apply


@pytest.fixture(scope="module")
def gen():
  params, apply = build(DCGANGenerator, 8, SHAPE, channels=8, norm="layer", num_classes=3)
  return params, apply, jax.jit(apply)


@pytest.fixture(scope="module")
def critic():
  params, apply = build(DCGANCritic, SHAPE, channels=8, norm="layer", num_classes=3)
  return params, apply, jax.jit(apply)


Z = jax.random.normal(jax.random.key(1), (4, 8))
X = jax.random.uniform(jax.random.key(2), (4, *SHAPE), minval=-1.0, maxval=1.0)
Y = jnp.array([0, 1, 2, 0])


@pytest.mark.parametrize("shape, seed, first_width", [
    ((8, 8, 1), (4, 4, 1), 8), ((16, 16, 1), (4, 4, 2), 16), ((28, 28, 1), (7, 7, 2), 16),
    ((32, 32, 3), (4, 4, 3), 32), ((64, 64, 3), (4, 4, 4), 64), ((16, 32, 3), (4, 8, 2), 16),
])
@pytest.mark.parametrize("norm", ["layer", "none"])
def test_shapes_for_several_image_sizes(shape, seed, first_width, norm):
  assert seed_shape(shape) == seed
  g = nnx.eval_shape(lambda: DCGANGenerator(5, shape, channels=8, norm=norm, rngs=nnx.Rngs(0)))
  c = nnx.eval_shape(lambda: DCGANCritic(shape, channels=8, norm=norm, rngs=nnx.Rngs(0)))
  assert g.seed == (seed[0], seed[1], first_width)     # the DCGAN ladder: 8 * 2^(k-1) at the seed
  gp, gapply = functional(g)
  cp, capply = functional(c)
  images = jax.eval_shape(gapply, gp, jax.ShapeDtypeStruct((3, 5), jnp.float32))
  assert images.shape == (3, *shape)
  assert jax.eval_shape(capply, cp, images).shape == (3,)


def test_generator_range_and_no_coupling_between_examples(gen):
  params, _, g = gen
  images = g(params, Z, Y)
  assert images.shape == (4, *SHAPE)
  assert float(jnp.abs(images).max()) <= 1.0 and float(images.std()) > 1e-2   # tanh, not constant
  # No batch statistics: the first two samples do not depend on the rest of the batch.
  np.testing.assert_allclose(g(params, Z[:2], Y[:2]), images[:2], rtol=1e-5, atol=1e-6)


def test_critic_outputs_depend_on_their_own_example_only(critic):
  params, _, f = critic
  out = f(params, X, Y)
  assert out.shape == (4,)
  jac = jax.jacrev(lambda x: f(params, x, Y))(X)         # (4, 4, H, W, C)
  norms = jnp.sqrt(jnp.sum(jac ** 2, axis=(2, 3, 4)))
  np.testing.assert_array_equal(norms * (1 - jnp.eye(4)), 0.0)   # so a per-example GP is valid
  assert float(jnp.diag(norms).min()) > 0


def test_labels_change_outputs(gen, critic):
  gp, _, g = gen
  cp, _, f = critic
  a, b = g(gp, Z, Y), g(gp, Z, jnp.array([1, 2, 0, 0]))
  assert float(jnp.abs(a[:3] - b[:3]).max()) > 1e-3
  np.testing.assert_allclose(a[3], b[3], rtol=1e-5, atol=1e-6)
  ca, cb = f(cp, X, Y), f(cp, X, jnp.array([1, 2, 0, 0]))
  assert float(jnp.abs(ca[:3] - cb[:3]).min()) > 1e-4
  np.testing.assert_allclose(ca[3], cb[3], rtol=1e-5, atol=1e-6)


def test_projection_discriminator_is_linear_in_the_label_embedding(critic):
  params, _, f = critic
  # f(x, y) = w^T phi + b + e_y^T phi: moving e_1 by delta moves f(x, 1) by delta^T phi, and a
  # second delta' adds linearly: f(e + d + d') - f(e + d) = f(e + d') - f(e).
  emb = params["label_embed"]["embedding"]
  d1 = jax.random.normal(jax.random.key(3), emb.shape[1:])
  d2 = jax.random.normal(jax.random.key(4), emb.shape[1:])
  with_emb = lambda e: f({**params, "label_embed": {"embedding": e}}, X, jnp.ones(4, jnp.int32))
  base, one, two = with_emb(emb), with_emb(emb.at[1].add(d1)), with_emb(emb.at[1].add(d2))
  both = with_emb(emb.at[1].add(d1 + d2))
  np.testing.assert_allclose(both - one, two - base, rtol=1e-3, atol=1e-3)


def test_jit_matches_eager_and_vmap_over_stacked_params(gen):
  params, apply, g = gen
  np.testing.assert_allclose(g(params, Z, Y), apply(params, Z, Y), rtol=1e-5, atol=1e-6)
  p2 = jax.tree.map(lambda a: a * 1.1, params)
  stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, p2)
  both = jax.jit(jax.vmap(apply, in_axes=(0, None, None)))(stacked, Z, Y)
  np.testing.assert_allclose(both[0], g(params, Z, Y), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(both[1], g(p2, Z, Y), rtol=1e-5, atol=1e-6)


def test_gradients_finite_and_nonzero_for_all_parameters(gen, critic):
  gp, _, g = gen
  cp, _, f = critic
  # The non-saturating generator loss through the critic: gradients reach every parameter.
  loss = lambda gp, cp: jnp.mean(jax.nn.softplus(-f(cp, g(gp, Z, Y), Y)))
  grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(gp, cp)
  for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
    leaf = np.asarray(leaf)   # numpy: no per-shape eager compiles
    assert np.all(np.isfinite(leaf)) and np.abs(leaf).max() > 0, path


def test_bfloat16_params(gen):
  params, _, g = gen
  low = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
  out = g(low, Z.astype(jnp.bfloat16), Y)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(out.astype(jnp.float32), g(params, Z, Y), atol=0.1)


def test_bad_arguments_raise(gen, critic):
  gp, gapply, _ = gen
  cp, capply, _ = critic
  with pytest.raises(ValueError, match="norm"):
    DCGANCritic(SHAPE, norm="batch", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="image_shape"):
    DCGANGenerator(4, (6, 6, 1), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="image_shape"):
    DCGANCritic((16, 16), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="latent_dim"):
    DCGANGenerator(0, SHAPE, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="channels"):
    DCGANGenerator(4, SHAPE, channels=0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="num_classes"):
    DCGANCritic(SHAPE, num_classes=-2, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="z must"):
    jax.eval_shape(gapply, gp, jnp.zeros((4, 7)), Y)
  with pytest.raises(ValueError, match="x must"):
    jax.eval_shape(capply, cp, jnp.zeros((4, 8, 8, 1)), Y)
  with pytest.raises(ValueError, match="required"):
    jax.eval_shape(gapply, gp, Z)
  with pytest.raises(ValueError, match=r"y must lie in \[0, num_classes\)"):
    capply(cp, X, jnp.array([0, 1, 2, 3]))
  uncond = nnx.eval_shape(lambda: DCGANCritic(SHAPE, channels=8, rngs=nnx.Rngs(0)))
  up, uapply = functional(uncond)
  with pytest.raises(ValueError, match="num_classes=0"):
    jax.eval_shape(uapply, up, X, Y)
