"""ConvEncoder / ConvDecoder: shapes, leading axes, MLP-compatible calls, Gaussian decoder, jit/vmap, gradients, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.nets.conv_vae import ConvDecoder, ConvEncoder
from research.nets.mlp import functional

SHAPE = (8, 8, 1)


def build(cls, *args, **kwargs):
  """(initial params, apply) with the initialisers run under one jit (an rbg key compiles fast)."""
  make = lambda: cls(*args, **kwargs, rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))
  _, apply = functional(nnx.eval_shape(make))
  return jax.jit(lambda: functional(make())[0])(), apply


@pytest.fixture(scope="module")
def enc():
  return build(ConvEncoder, SHAPE, 3, (8, 16))


@pytest.fixture(scope="module")
def dec():
  return build(ConvDecoder, 3, SHAPE, (16, 8))


X = jax.random.uniform(jax.random.key(1), (5, *SHAPE))


@pytest.mark.parametrize("shape, channels", [((8, 8, 1), (32, 64)), ((28, 28, 1), (32, 64)),
                                             ((32, 32, 3), (16, 32, 64)), ((16, 8, 2), (4,))])
def test_shapes(shape, channels):
  e = nnx.eval_shape(lambda: ConvEncoder(shape, 6, channels, rngs=nnx.Rngs(0)))
  d = nnx.eval_shape(lambda: ConvDecoder(6, shape, channels[::-1], rngs=nnx.Rngs(0)))
  ep, eapply = functional(e)
  dp, dapply = functional(d)
  mu, log_var = jax.eval_shape(eapply, ep, jax.ShapeDtypeStruct((4, *shape), jnp.float32))
  assert mu.shape == log_var.shape == (4, 6)
  assert jax.eval_shape(dapply, dp, mu).shape == (4, *shape)


def test_encoder_matches_eager_and_accepts_leading_axes(enc):
  params, apply = enc
  mu, log_var = jax.jit(apply)(params, X)
  assert mu.shape == log_var.shape == (5, 3)
  np.testing.assert_allclose(mu, apply(params, X)[0], rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(mu[0] - mu[1]).max()) > 1e-4
  stacked = jax.jit(apply)(params, jnp.stack([X, X[::-1]]))[0]    # (2, 5, ...) -> (2, 5, 3)
  np.testing.assert_allclose(stacked[1], mu[::-1], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(apply(params, X[2])[0], mu[2], rtol=1e-5, atol=1e-6)  # one example


def test_decoder_accepts_leading_sample_axes(dec):
  params, apply = dec
  z = jax.random.normal(jax.random.key(2), (7, 5, 3))              # (k, batch, latent)
  logits = jax.jit(apply)(params, z)
  assert logits.shape == (7, 5, *SHAPE)
  np.testing.assert_allclose(logits[2], apply(params, z[2]), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(logits[2, 1], apply(params, z[2, 1]), rtol=1e-5, atol=1e-5)


def test_categorical_decoder_outputs_logits_over_levels():
  params, apply = functional(ConvDecoder(3, SHAPE, (16, 8), levels=17, rngs=nnx.Rngs(0)))
  z = jax.random.normal(jax.random.key(2), (7, 5, 3))
  out = jax.jit(apply)(params, z)
  assert out.shape == (7, 5, *SHAPE, 17)
  np.testing.assert_allclose(out[2, 1], apply(params, z[2, 1]), rtol=1e-5, atol=1e-5)


def test_same_call_as_the_mlp_networks():
  # experiments/families/vae.py builds MLPEncoder(data_shape, latent, hidden, rngs=...) and
  # MLPDecoder(latent, data_shape, reversed(hidden), log_var=..., learn_log_var=..., rngs=...).
  e = nnx.eval_shape(lambda: ConvEncoder(SHAPE, 2, (8, 16), rngs=nnx.Rngs(0)))
  d = nnx.eval_shape(lambda: ConvDecoder(2, SHAPE, (16, 8), log_var=0.0, learn_log_var=True,
                                         rngs=nnx.Rngs(0)))
  assert e.event_shape == SHAPE and d.out_shape == SHAPE and e.latent_dim == d.latent_dim == 2


def test_gaussian_decoder_fixed_and_learned_log_variance():
  z = jnp.ones((4, 2))
  fixed_params, fixed = build(ConvDecoder, 2, SHAPE, (4,), log_var=-1.0)
  mean, log_var = fixed(fixed_params, z)
  assert "log_var" not in fixed_params and mean.shape == log_var.shape == (4, *SHAPE)
  np.testing.assert_allclose(log_var, -1.0)
  learned_params, learned = build(ConvDecoder, 2, SHAPE, (4,), log_var=0.5, learn_log_var=True)
  np.testing.assert_allclose(learned_params["log_var"], 0.5)
  assert learned_params["log_var"].shape == SHAPE
  grad = jax.grad(lambda p: jnp.sum(learned(p, z)[1]))(learned_params)
  np.testing.assert_allclose(grad["log_var"], 4.0)             # one per pixel, summed over batch


def test_vmap_over_stacked_params_and_gradients(enc, dec):
  ep, eapply = enc
  dp, dapply = dec
  dp2 = jax.tree.map(lambda a: a * 0.9, dp)
  stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), dp, dp2)
  z = jax.random.normal(jax.random.key(3), (5, 3))
  both = jax.jit(jax.vmap(dapply, in_axes=(0, None)))(stacked, z)
  np.testing.assert_allclose(both[0], dapply(dp, z), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(both[1], dapply(dp2, z), rtol=1e-5, atol=1e-5)

  def loss(ep, dp):   # a one-sample ELBO-like objective through both networks
    mu, log_var = eapply(ep, X)
    z = mu + jnp.exp(0.5 * log_var) * jax.random.normal(jax.random.key(4), mu.shape)
    logits = dapply(dp, z)
    return jnp.mean(jnp.sum(jax.nn.softplus(logits) - X * logits, axis=(1, 2, 3)))
  grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(ep, dp)
  for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
    leaf = np.asarray(leaf)   # numpy: no per-shape eager compiles
    assert np.all(np.isfinite(leaf)) and np.abs(leaf).max() > 0, path


def test_bfloat16_params(dec):
  params, apply = dec
  low = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
  z = jax.random.normal(jax.random.key(5), (5, 3))
  out = apply(low, z.astype(jnp.bfloat16))
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(out.astype(jnp.float32), apply(params, z), atol=0.05)


def test_bad_arguments_raise(enc, dec):
  with pytest.raises(ValueError, match="latent_dim"):
    ConvEncoder(SHAPE, 0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="channels"):
    ConvDecoder(2, SHAPE, (), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="divisible"):
    ConvEncoder((8, 8, 1), 2, (4, 4, 4, 4), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="image_shape"):
    ConvDecoder(2, (8, 8), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="learn_log_var"):
    ConvDecoder(2, SHAPE, learn_log_var=True, rngs=nnx.Rngs(0))
  ep, eapply = enc
  dp, dapply = dec
  with pytest.raises(ValueError, match="image_shape"):
    jax.eval_shape(eapply, ep, jnp.zeros((3, 64)))
  with pytest.raises(ValueError, match="latent_dim=3"):
    jax.eval_shape(dapply, dp, jnp.zeros((3, 2)))
