"""The KL-regularised autoencoder objective and the latent scale factor (Rombach et al. 2022).

LDM's first stage ("High-Resolution Image Synthesis with Latent Diffusion Models",
Sec. 3.1, App. G) trains an autoencoder whose posterior q(z|x) = N(mu(x), diag sigma^2(x))
is pulled only slightly towards N(0, I):

  loss(x) = sum_pixels d(x, D(z)) + kl_weight * KL(q(z|x) || N(0, I)),   z ~ q(z|x)

with d the squared ("l2") or absolute ("l1") error and a small kl_weight (LDM: 1e-6
relative to its summed reconstruction term). LDM adds a perceptual (LPIPS) and a patch
GAN term; neither is used here (no pretrained perceptual network for 8x8 digits).

The latent scale factor (Stable Diffusion's 0.18215): with a small KL weight the
latents are not unit-variance, so the diffusion model is trained on z' = s z with
s = 1 / std(z) over the elements of the encoded training latents (LDM Sec. 4.3.2,
"rescale the latent ... by the component-wise standard deviation").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from research.losses.vae import kl_standard_normal

RECONSTRUCTIONS = ("l2", "l1")


def reconstruction_error(x, x_hat, kind: str = "l2", event_ndim: int = 3):
  """Per-example sum over the last event_ndim axes of (x - x_hat)^2 ("l2") or |x - x_hat| ("l1")."""
  if kind not in RECONSTRUCTIONS:
    raise ValueError(f"kind must be one of {RECONSTRUCTIONS}, got {kind!r}")
  diff = x - x_hat
  err = jnp.square(diff) if kind == "l2" else jnp.abs(diff)
  return jnp.sum(err, axis=tuple(range(-event_ndim, 0)))


def kl_diagonal(mu, log_var, event_ndim: int = 3):
  """KL(N(mu, diag exp(log_var)) || N(0, I)) per example, summed over the last event_ndim axes."""
  lead = mu.shape[:mu.ndim - event_ndim]
  return kl_standard_normal(mu.reshape(*lead, -1), log_var.reshape(*lead, -1))


def kl_autoencoder_loss(key, x, mu, log_var, decoder_fn, *, kl_weight: float,
                        reconstruction: str = "l2", event_ndim: int = 3):
  """(mean over the batch of d(x, D(z)) + kl_weight KL, metrics); z = mu + sigma eps.

  Example b's eps comes from fold_in(key, b), so the loss does not depend on the batch size.
  metrics: "recon" (mean summed error), "kl" (mean KL, nats), "mse" (mean per-element
  squared error of the sampled reconstruction).
  """
  if not kl_weight >= 0:
    raise ValueError(f"kl_weight must be >= 0, got {kl_weight!r}")
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(mu.shape[0]))
  eps = jax.vmap(lambda k: jax.random.normal(k, mu.shape[1:], mu.dtype))(keys)
  z = mu + jnp.exp(0.5 * log_var) * eps
  x_hat = decoder_fn(z)
  recon = reconstruction_error(x, x_hat, reconstruction, event_ndim)
  kl = kl_diagonal(mu, log_var, mu.ndim - 1)
  loss = jnp.mean(recon + kl_weight * kl)
  return loss, {"recon": jnp.mean(recon), "kl": jnp.mean(kl),
                "mse": jnp.mean(jnp.square(x - x_hat))}


def latent_scale_factor(latents, eps: float = 1e-8):
  """s = 1 / std(latents), the std over every element (Stable Diffusion's scale_factor)."""
  return 1.0 / jnp.maximum(jnp.std(jnp.asarray(latents, jnp.float32)), eps)
