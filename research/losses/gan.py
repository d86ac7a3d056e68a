"""GAN objectives in logits form: minimax, non-saturating, WGAN and WGAN-GP.

Conventions: `real_out` / `fake_out` are the discriminator's (critic's) outputs
on a batch of real / generated examples, shape (B,). For the Jensen-Shannon
GANs they are logits D(x) with sigmoid(D(x)) = P(x is real); every log-sigmoid
is written with softplus,

    log sigmoid(d) = -softplus(-d),      log(1 - sigmoid(d)) = -softplus(d),

so no loss ever takes log(0). For the Wasserstein GANs they are unbounded
critic values f(x). Every loss is a mean over the batch and is MINIMISED by the
player it belongs to (the critic's loss is the negative of the quantity it
maximises).

Papers: Goodfellow et al. 2014, "Generative Adversarial Nets" (minimax and
non-saturating losses, optimal discriminator); Arjovsky, Chintala & Bottou 2017,
"Wasserstein GAN" (critic loss, weight clipping); Gulrajani et al. 2017,
"Improved Training of Wasserstein GANs" (gradient penalty).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

__all__ = [
    "LOSSES",
    "discriminator_loss",
    "minimax_generator_loss",
    "non_saturating_generator_loss",
    "wgan_critic_loss",
    "wgan_generator_loss",
    "critic_loss",
    "generator_loss",
    "clip_weights",
    "interpolate",
    "gradient_norms",
    "gradient_penalty_at",
    "gradient_penalty",
    "optimal_discriminator_logits",
]

# Loss variants understood by critic_loss / generator_loss. "wgan_gp" uses the
# WGAN critic and generator losses; the penalty is added by the caller
# (gradient_penalty needs the critic function, not just its outputs).
LOSSES = ("minimax", "non_saturating", "wgan", "wgan_gp")


def discriminator_loss(real_out: jax.Array, fake_out: jax.Array) -> jax.Array:
  """Binary cross-entropy of the discriminator (Goodfellow et al. 2014, eq. 1).

      L_D = E_real softplus(-D(x)) + E_fake softplus(D(G(z)))
          = -E log sigmoid(D(x)) - E log(1 - sigmoid(D(G(z)))).

  Minimised over D by D*(x) = log p_data(x) - log p_g(x) in logits
  (`optimal_discriminator_logits`), where L_D = log 4 - 2 JS(p_data || p_g).
  """
  return jnp.mean(jax.nn.softplus(-real_out)) + jnp.mean(jax.nn.softplus(fake_out))


def minimax_generator_loss(fake_out: jax.Array) -> jax.Array:
  """Saturating (minimax) generator loss (Goodfellow et al. 2014, eq. 1).

      L_G = E log(1 - sigmoid(D(G(z)))) = -E softplus(D(G(z))).

  Its gradient dL_G/dD = -sigmoid(D) vanishes as D(G(z)) -> -inf, i.e. exactly
  when the discriminator confidently rejects the samples (early training).
  """
  return -jnp.mean(jax.nn.softplus(fake_out))


def non_saturating_generator_loss(fake_out: jax.Array) -> jax.Array:
  """Non-saturating generator loss (Goodfellow et al. 2014, Sec. 3).

      L_G = -E log sigmoid(D(G(z))) = E softplus(-D(G(z))).

  Same fixed point as the minimax loss, but dL_G/dD = -sigmoid(-D) -> -1 as
  D(G(z)) -> -inf: strong gradients when the generator is losing.
  """
  return jnp.mean(jax.nn.softplus(-fake_out))


def wgan_critic_loss(real_out: jax.Array, fake_out: jax.Array) -> jax.Array:
  """WGAN critic loss (Arjovsky et al. 2017, Algorithm 1).

      L_f = E f(G(z)) - E f(x),

  the negative of the Kantorovich-Rubinstein estimate of W1(p_data, p_g) when f
  is 1-Lipschitz (enforced by `clip_weights` or `gradient_penalty`).
  """
  return jnp.mean(fake_out) - jnp.mean(real_out)


def wgan_generator_loss(fake_out: jax.Array) -> jax.Array:
  """WGAN generator loss L_G = -E f(G(z)) (Arjovsky et al. 2017, Algorithm 1)."""
  return -jnp.mean(fake_out)


def _check_kind(kind: str) -> None:
  if kind not in LOSSES:
    raise ValueError(f"kind must be one of {LOSSES}, got {kind!r}")


def critic_loss(kind: str, real_out: jax.Array, fake_out: jax.Array) -> jax.Array:
  """The discriminator / critic loss of variant `kind` (without any gradient penalty).

  "minimax", "non_saturating": `discriminator_loss`; "wgan", "wgan_gp": `wgan_critic_loss`.
  """
  _check_kind(kind)
  if kind in ("minimax", "non_saturating"):
    return discriminator_loss(real_out, fake_out)
  return wgan_critic_loss(real_out, fake_out)


def generator_loss(kind: str, fake_out: jax.Array) -> jax.Array:
  """The generator loss of variant `kind` (see the per-variant functions)."""
  _check_kind(kind)
  if kind == "minimax":
    return minimax_generator_loss(fake_out)
  if kind == "non_saturating":
    return non_saturating_generator_loss(fake_out)
  return wgan_generator_loss(fake_out)


def clip_weights(params, c: float):
  """Clip every parameter leaf to [-c, c] (Arjovsky et al. 2017, Algorithm 1, c = 0.01).

  Applied to the critic's parameters (weights and biases, as in the reference
  implementation) after every critic update.
  """
  if not c > 0:
    raise ValueError(f"c must be > 0, got {c!r}")
  return jax.tree.map(lambda p: jnp.clip(p, -c, c), params)


def interpolate(key: jax.Array, x_real: jax.Array, x_fake: jax.Array) -> jax.Array:
  """x_hat = x_real + a (x_fake - x_real), one a ~ U(0, 1) per example (Gulrajani et al. 2017).

  `a` has shape (B,) and is broadcast over all non-batch axes of x.
  """
  if x_real.shape != x_fake.shape:
    raise ValueError(f"x_real and x_fake must have the same shape, got {x_real.shape} "
                     f"and {x_fake.shape}")
  a = jax.random.uniform(key, x_real.shape[:1], dtype=x_real.dtype)
  a = a.reshape(a.shape + (1,) * (x_real.ndim - 1))
  return x_real + a * (x_fake - x_real)


def _safe_norm(sq: jax.Array) -> jax.Array:
  """sqrt(sq) with a zero (not NaN) derivative at sq = 0."""
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def gradient_norms(critic_fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
  """Per-example ||grad_x f(x_i)||_2 with the norm over ALL non-batch axes; shape (B,).

  critic_fn maps a batch (B, ...) to (B,) with each output depending only on its
  own example (no batch norm), so grad_x sum_i f(x_i) stacks the per-example
  gradients. For an image batch (B, H, W, C) the norm runs over H, W and C
  together (taking it over one axis only is a known implementation bug).
  """
  grads = jax.grad(lambda y: jnp.sum(critic_fn(y)))(x)
  sq = jnp.sum(jnp.square(grads).reshape(x.shape[0], -1), axis=-1)
  return _safe_norm(sq)


def gradient_penalty_at(critic_fn: Callable[[jax.Array], jax.Array], x_hat: jax.Array,
                        target: float = 1.0) -> jax.Array:
  """GP = E_i (||grad_x f(x_hat_i)||_2 - target)^2 at given points (Gulrajani et al. 2017, eq. 3)."""
  return jnp.mean(jnp.square(gradient_norms(critic_fn, x_hat) - target))


def gradient_penalty(key: jax.Array, critic_fn: Callable[[jax.Array], jax.Array],
                     x_real: jax.Array, x_fake: jax.Array, target: float = 1.0) -> jax.Array:
  """WGAN-GP penalty on random interpolates (Gulrajani et al. 2017, Algorithm 1).

      x_hat = x_real + a (x_fake - x_real),  a ~ U(0, 1) per example,
      GP    = E (||grad_x f(x_hat)||_2 - 1)^2,

  norm over all non-batch axes. The critic loss is wgan_critic_loss + lambda GP
  with lambda = 10 in the paper. Differentiable w.r.t. the critic's parameters
  (double backpropagation).
  """
  return gradient_penalty_at(critic_fn, interpolate(key, x_real, x_fake), target)


def optimal_discriminator_logits(log_p_data: jax.Array, log_p_model: jax.Array) -> jax.Array:
  """Logits of the optimal discriminator D*(x) = p_data / (p_data + p_g) (Goodfellow et al. 2014, Prop. 1).

  sigmoid(log p_data - log p_g) = p_data / (p_data + p_g); inputs are the log
  densities evaluated at the same points.
  """
  return log_p_data - log_p_model
