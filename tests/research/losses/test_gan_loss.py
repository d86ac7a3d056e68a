"""GAN losses: formulas, gradient behaviour, optimal discriminator, gradient penalty, clipping."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from scipy import stats

from research.losses import gan
from research.nets.gan_mlp import Critic
from research.nets.mlp import functional

REAL = np.array([2.0, -1.0, 0.5, 0.0], np.float32)
FAKE = np.array([-3.0, 1.5, 0.25, 4.0], np.float32)


def _softplus(x):
  return np.log1p(np.exp(x))


def test_loss_formulas_match_hand_computation():
  d_loss = np.mean(-np.log(1 / (1 + np.exp(-REAL)))) + np.mean(-np.log(1 - 1 / (1 + np.exp(-FAKE))))
  np.testing.assert_allclose(gan.discriminator_loss(REAL, FAKE), d_loss, rtol=1e-6)
  np.testing.assert_allclose(gan.non_saturating_generator_loss(FAKE), np.mean(_softplus(-FAKE)), rtol=1e-6)
  # minimax: E log(1 - sigmoid(D)) = -E softplus(D)
  np.testing.assert_allclose(gan.minimax_generator_loss(FAKE),
                             np.mean(np.log(1 - 1 / (1 + np.exp(-FAKE)))), rtol=1e-6)
  np.testing.assert_allclose(gan.wgan_critic_loss(REAL, FAKE), FAKE.mean() - REAL.mean(), rtol=1e-6)
  np.testing.assert_allclose(gan.wgan_generator_loss(FAKE), -FAKE.mean(), rtol=1e-6)
  # the dispatchers
  assert gan.critic_loss("non_saturating", REAL, FAKE) == gan.discriminator_loss(REAL, FAKE)
  assert gan.critic_loss("wgan_gp", REAL, FAKE) == gan.wgan_critic_loss(REAL, FAKE)
  assert gan.generator_loss("minimax", FAKE) == gan.minimax_generator_loss(FAKE)
  assert gan.generator_loss("wgan", FAKE) == gan.wgan_generator_loss(FAKE)
  with pytest.raises(ValueError, match="kind must be one of"):
    gan.generator_loss("hinge", FAKE)


def test_losses_are_finite_for_extreme_logits():
  big = jnp.array([-1e4, 1e4], jnp.float32)
  for value in (gan.discriminator_loss(big, big), gan.minimax_generator_loss(big),
                gan.non_saturating_generator_loss(big)):
    assert np.isfinite(value)


def test_saturating_loss_vanishes_and_non_saturating_does_not_when_d_rejects_fakes():
  fake = jnp.full((4,), -20.0)   # D(G(z)) -> -inf: the discriminator wins
  g_sat = jax.grad(gan.minimax_generator_loss)(fake)
  g_ns = jax.grad(gan.non_saturating_generator_loss)(fake)
  # d/dD of -softplus(D) = -sigmoid(D) ~ -2e-9; of softplus(-D) = -sigmoid(-D) ~ -1 (per example / B)
  assert np.all(np.abs(g_sat) < 1e-8)
  np.testing.assert_allclose(g_ns, -0.25, rtol=1e-6)
  # both push D(G(z)) up (negative gradient) and agree in sign everywhere
  x = jnp.linspace(-5, 5, 11)
  assert np.all(jax.grad(gan.minimax_generator_loss)(x) < 0)
  assert np.all(jax.grad(gan.non_saturating_generator_loss)(x) < 0)


def test_optimal_discriminator_logits_give_p_over_p_plus_q():
  x = np.linspace(-2, 3, 11)
  lp, lq = stats.norm.logpdf(x, 0, 1), stats.norm.logpdf(x, 1, 0.5)
  d = jax.nn.sigmoid(gan.optimal_discriminator_logits(lp, lq))
  np.testing.assert_allclose(d, np.exp(lp) / (np.exp(lp) + np.exp(lq)), rtol=1e-5)


def test_trained_discriminator_approaches_p_over_p_plus_q():
  """D trained with the D loss on N(0, 1) (real) vs N(1, 0.5^2) (fake) -> p / (p + q)."""
  critic = Critic((1,), (32, 32), activation="silu", rngs=nnx.Rngs(params=jax.random.key(0)))
  params, apply = functional(critic)
  tx = optax.adam(1e-2)

  def step(carry, key):
    params, opt_state = carry
    k_r, k_f = jax.random.split(key)
    real = jax.random.normal(k_r, (512, 1))
    fake = 1.0 + 0.5 * jax.random.normal(k_f, (512, 1))
    loss, grads = jax.value_and_grad(
        lambda p: gan.discriminator_loss(apply(p, real), apply(p, fake)))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  keys = jax.random.split(jax.random.key(1), 600)
  (params, _), losses = jax.jit(lambda c, k: jax.lax.scan(step, c, k))((params, tx.init(params)), keys)
  grid = np.linspace(-0.5, 2.0, 26, dtype=np.float32)       # the bulk of both densities
  p, q = stats.norm.pdf(grid, 0, 1), stats.norm.pdf(grid, 1, 0.5)
  d = np.asarray(jax.nn.sigmoid(apply(params, grid[:, None])))
  np.testing.assert_allclose(d, p / (p + q), atol=0.05)
  # at the optimum L_D = log 4 - 2 JS(p || q) < log 4; the last losses are below log 4
  assert float(np.mean(losses[-50:])) < np.log(4.0) - 0.1


def _linear_critic(c, w):
  """f(x) = c * sum(w * x) over all non-batch axes: grad norm c ||w|| everywhere."""
  return lambda x: c * jnp.sum((w * x).reshape(x.shape[0], -1), axis=-1)


def test_gradient_penalty_of_linear_critic_on_images_uses_the_norm_over_all_axes():
  k_w, k_r, k_f, k_gp = jax.random.split(jax.random.key(0), 4)
  w = jax.random.normal(k_w, (4, 4, 3))
  w_norm = float(jnp.linalg.norm(w.ravel()))
  c = 1.7
  x_real = jax.random.normal(k_r, (6, 4, 4, 3))
  x_fake = jax.random.normal(k_f, (6, 4, 4, 3))

  @jax.jit
  def measure(c):
    f = _linear_critic(c, w)
    dgp_dc = jax.grad(lambda c_: gan.gradient_penalty(k_gp, _linear_critic(c_, w), x_real, x_fake))(c)
    return gan.gradient_norms(f, x_real), gan.gradient_penalty(k_gp, f, x_real, x_fake), dgp_dc

  norms, gp, dgp_dc = measure(c)
  np.testing.assert_allclose(norms, np.full(6, c * w_norm), rtol=1e-5)
  expected = (c * w_norm - 1.0) ** 2
  np.testing.assert_allclose(gp, expected, rtol=1e-5)
  # a norm over the last axis only (the known bug) would give a different value
  per_pixel = np.linalg.norm(c * np.broadcast_to(np.asarray(w), x_real.shape), axis=-1)
  assert abs(float(np.mean((per_pixel - 1) ** 2)) - expected) > 1.0
  # differentiable in the critic's parameters: d/dc (c ||w|| - 1)^2 = 2 (c ||w|| - 1) ||w||
  np.testing.assert_allclose(dgp_dc, 2 * (c * w_norm - 1) * w_norm, rtol=1e-4)


def test_gradient_penalty_of_quadratic_critic_uses_per_example_norms():
  x = jnp.array([[3.0, 4.0], [0.0, 0.5], [1.0, 0.0]])     # grad of 0.5 ||x||^2 is x
  f = lambda y: 0.5 * jnp.sum(y**2, axis=-1)                # noqa: E731
  np.testing.assert_allclose(gan.gradient_norms(f, x), [5.0, 0.5, 1.0], rtol=1e-6)
  np.testing.assert_allclose(gan.gradient_penalty_at(f, x), (16.0 + 0.25 + 0.0) / 3, rtol=1e-6)


def test_gradient_penalty_is_finite_where_the_input_gradient_is_zero():
  const = lambda scale, x: scale * jnp.zeros(x.shape[:1]) + 0.0 * jnp.sum(x * 0, -1)  # noqa: E731
  x = jnp.ones((3, 2))
  gp, g = jax.value_and_grad(lambda s: gan.gradient_penalty_at(lambda y: const(s, y), x))(1.0)
  assert float(gp) == 1.0 and np.isfinite(g)


def test_interpolate_draws_one_coefficient_per_example():
  k_r, k_f, k_a = jax.random.split(jax.random.key(3), 3)
  x_real = jax.random.normal(k_r, (5, 2, 3))
  x_fake = jax.random.normal(k_f, (5, 2, 3))
  x_hat = gan.interpolate(k_a, x_real, x_fake)
  a = (x_hat - x_real) / (x_fake - x_real)
  np.testing.assert_allclose(a, np.broadcast_to(a[:, :1, :1], a.shape), rtol=1e-4, atol=1e-5)
  assert np.all((a >= 0) & (a <= 1)) and np.unique(np.round(a[:, 0, 0], 5)).size == 5
  with pytest.raises(ValueError, match="same shape"):
    gan.interpolate(k_a, x_real, x_fake[:4])


def test_clip_weights_clips_every_leaf():
  params = {"w": jnp.array([[-1.0, 0.005], [0.02, -0.003]]), "b": jnp.array([0.5, -0.5])}
  out = gan.clip_weights(params, 0.01)
  np.testing.assert_allclose(out["w"], [[-0.01, 0.005], [0.01, -0.003]], rtol=1e-6)
  np.testing.assert_allclose(out["b"], [0.01, -0.01], rtol=1e-6)
  with pytest.raises(ValueError, match="c must be > 0"):
    gan.clip_weights(params, 0.0)
