"""MLPEncoder / MLPDecoder: shapes, functional core, Gaussian log-variance, bad arguments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.nets.mlp import functional
from research.nets.vae import MLPDecoder, MLPEncoder


def test_encoder_flattens_images_and_functional_apply_matches_module():
  enc = MLPEncoder((8, 8, 1), 3, (16, 16), rngs=nnx.Rngs(0))
  params, apply = functional(enc)
  x = jax.random.uniform(jax.random.key(1), (5, 8, 8, 1))
  mu, log_var = jax.jit(apply)(params, x)
  assert mu.shape == log_var.shape == (5, 3)
  ref_mu, ref_lv = enc(x)
  np.testing.assert_allclose(mu, ref_mu, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(log_var, ref_lv, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(apply(params, x.reshape(5, 8, 8, 1))[0],
                             apply(params, x)[0], rtol=1e-6)  # the same flattening each call
  assert params["layers"][0]["kernel"].shape == (64, 16)


def test_decoder_accepts_leading_sample_axes():
  dec = MLPDecoder(3, (8, 8, 1), (16,), rngs=nnx.Rngs(0))
  params, apply = functional(dec)
  z = jax.random.normal(jax.random.key(1), (7, 5, 3))           # (k, batch, latent)
  logits = jax.jit(apply)(params, z)
  assert logits.shape == (7, 5, 8, 8, 1)
  np.testing.assert_allclose(logits[2], apply(params, z[2]), rtol=1e-5, atol=1e-6)


def test_gaussian_decoder_fixed_and_learned_log_variance():
  z = jnp.ones((4, 2))
  fixed_params, fixed = functional(MLPDecoder(2, (3,), (8,), log_var=-1.0, rngs=nnx.Rngs(0)))
  mean, log_var = fixed(fixed_params, z)
  assert "log_var" not in fixed_params and mean.shape == log_var.shape == (4, 3)
  np.testing.assert_allclose(log_var, -1.0)
  learned_params, learned = functional(
      MLPDecoder(2, (3,), (8,), log_var=0.5, learn_log_var=True, rngs=nnx.Rngs(0)))
  np.testing.assert_allclose(learned_params["log_var"], 0.5)
  learned_params["log_var"] = jnp.array([0.0, 1.0, 2.0])
  np.testing.assert_allclose(learned(learned_params, z)[1], jnp.tile(jnp.arange(3.0), (4, 1)))
  grad = jax.grad(lambda p: jnp.sum(learned(p, z)[1]))(learned_params)
  np.testing.assert_allclose(grad["log_var"], 4.0)              # trainable, one per dimension


def test_categorical_decoder_outputs_logits_over_levels():
  params, apply = functional(MLPDecoder(3, (8, 8, 1), (16,), levels=17, rngs=nnx.Rngs(0)))
  z = jax.random.normal(jax.random.key(1), (7, 5, 3))           # (k, batch, latent)
  assert apply(params, z).shape == (7, 5, 8, 8, 1, 17)
  with pytest.raises(ValueError, match="levels"):
    MLPDecoder(3, (4,), (8,), levels=1, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="exclude"):
    MLPDecoder(3, (4,), (8,), levels=17, log_var=0.0, rngs=nnx.Rngs(0))


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="latent_dim"):
    MLPEncoder((4,), 0, (8,), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="hidden"):
    MLPDecoder(2, (4,), (), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="learn_log_var"):
    MLPDecoder(2, (4,), (8,), learn_log_var=True, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="event_shape"):
    MLPEncoder((8, 8, 1), 2, (8,), rngs=nnx.Rngs(0))(jnp.zeros((3, 64)))
  with pytest.raises(ValueError, match="latent_dim=2"):
    MLPDecoder(2, (4,), (8,), rngs=nnx.Rngs(0))(jnp.zeros((3, 5)))
