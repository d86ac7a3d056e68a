"""Variational autoencoder objectives: likelihoods, KL terms, ELBO, beta/capacity VAE, IWAE.

Model: p(z) = N(0, I), decoder p(x|z), encoder q(z|x) = N(mu, diag exp(log_var))
(Kingma & Welling 2014; Rezende et al. 2014). The encoder enters every function
through its outputs (mu, log_var) -- shape (batch, latent_dim) -- and the decoder
as a plain callable `decoder_fn(z) -> output` that accepts any leading axes
(z has shape (..., latent_dim)), so the same code serves a Flax network and an
analytic model. The decoder output is read by `likelihood`:

  "bernoulli":   output = logits l, same shape as x;
  "gaussian":    output = (mean, log_var), log_var broadcastable to x (fixed or learned);
  "categorical": output = logits l of shape (*x.shape, L) over L grey levels, x in [0, 1]
                 read as the level round(x (L - 1)) (a discretised decoder).

Reduction convention: log-likelihoods and KLs are SUMMED over the last
`event_ndim` axes of x (the pixels of one example; 1 for flattened data) and over
the latent axis; functions named *_bound / elbo return one value PER EXAMPLE.
Losses (beta_vae_loss, capacity_vae_loss) return the batch mean of the negative
objective, a scalar to minimise.

Randomness: example b draws its latent samples z_{b,1..k} from
fold_in(key, b), so a per-example value does not depend on the batch size, and
the ELBO with the Monte Carlo KL uses exactly the sample z_{b,1} that the IWAE
bound with k = 1 uses (L_1 = ELBO).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from research.sampling.reparam import rsample_normal

__all__ = ["LIKELIHOODS", "KL_ESTIMATORS", "bernoulli_log_likelihood", "gaussian_log_likelihood",
           "categorical_log_likelihood", "log_likelihood", "normal_log_prob",
           "standard_normal_log_prob", "kl_standard_normal",
           "kl_monte_carlo", "ElboTerms", "elbo", "beta_vae_loss", "capacity_schedule",
           "capacity_vae_loss", "log_importance_weights", "iwae_bound", "LogWeights",
           "log_weight_samples", "iwae_estimates", "iwae_nll"]

LIKELIHOODS = ("bernoulli", "gaussian", "categorical")
KL_ESTIMATORS = ("analytic", "mc")
_LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------------------
# Argument checks (values checked only when concrete; tracers pass through).
# ----------------------------------------------------------------------------
def _concrete(x):
  return None if isinstance(x, jax.core.Tracer) else np.asarray(x)


def _check_nonnegative(name, value):
  v = _concrete(value)
  if v is not None and not (np.all(np.isfinite(v)) and np.all(v >= 0)):
    raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _check_count(name, value):
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_choice(name, value, allowed):
  if value not in allowed:
    raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def _event_sum(a, event_ndim):
  if event_ndim < 0:
    raise ValueError(f"event_ndim must be >= 0, got {event_ndim}")
  return jnp.sum(a, axis=tuple(range(a.ndim - event_ndim, a.ndim)))


# ----------------------------------------------------------------------------
# Decoder likelihoods.
# ----------------------------------------------------------------------------
def bernoulli_log_likelihood(x, logits, event_ndim: int = 1):
  """log p(x|l) of independent Bernoullis in logits, summed over the event axes.

  log p(x|l) = sum_j [x_j log_sigmoid(l_j) + (1 - x_j) log_sigmoid(-l_j)]
  (docs/math.md, "VAE"). Written with log_sigmoid, never log(1 - sigmoid(l)), so it stays
  finite for |l| ~ 1e4 in float32. x may lie in [0, 1] (the usual relaxation for
  grey-scale pixels); x and logits broadcast.
  """
  x = jnp.asarray(x, jnp.result_type(logits, jnp.float32))
  per_dim = x * jax.nn.log_sigmoid(logits) + (1.0 - x) * jax.nn.log_sigmoid(-logits)
  return _event_sum(per_dim, event_ndim)


def gaussian_log_likelihood(x, mean, log_var, event_ndim: int = 1):
  """log N(x; mean, diag exp(log_var)), summed over the event axes.

  log p(x) = -0.5 sum_j [log(2 pi) + log_var_j + (x_j - mean_j)^2 exp(-log_var_j)].
  log_var may be a scalar (fixed observation noise) or learned per dimension.
  """
  log_var = jnp.asarray(log_var, jnp.result_type(mean, jnp.float32))
  per_dim = -0.5 * (_LOG_2PI + log_var + jnp.square(x - mean) * jnp.exp(-log_var))
  return _event_sum(per_dim, event_ndim)


def categorical_log_likelihood(x, logits, event_ndim: int = 1):
  """log p(x|l) of independent categoricals over L grey levels, summed over the event axes.

  logits l: shape (..., *event, L), one softmax over the L levels per pixel; x in [0, 1]
  (shape (..., *event), broadcasting against l without its last axis) is read as the
  level k = round(x (L - 1)) (values outside [0, 1] are clipped first), and

      log p(x|l) = sum_j log softmax(l_j)[k_j]

  -- a discretised decoder, the per-pixel softmax of PixelRNN (van den Oord et al. 2016)
  over the data's own levels, so log p(x|z) is a log-probability of the discrete image
  and an IWAE bound on it bounds the exact discrete NLL. Written with log_softmax.
  """
  logits = jnp.asarray(logits)
  levels = logits.shape[-1] if logits.ndim else 0
  if levels < 2:
    raise ValueError(f"logits must end in an axis of L >= 2 levels, got shape {logits.shape}")
  logp = jax.nn.log_softmax(logits.astype(jnp.result_type(logits, jnp.float32)), axis=-1)
  k = jnp.round(jnp.clip(jnp.asarray(x, logp.dtype), 0.0, 1.0) * (levels - 1)).astype(jnp.int32)
  k = jnp.broadcast_to(k, logp.shape[:-1])
  per_dim = jnp.take_along_axis(logp, k[..., None], axis=-1)[..., 0]
  return _event_sum(per_dim, event_ndim)


def log_likelihood(x, decoder_out, likelihood: str = "bernoulli", event_ndim: int = 1):
  """log p(x|z) from a decoder output: logits ("bernoulli"), (mean, log_var) ("gaussian")
  or level logits with a trailing axis of L levels ("categorical")."""
  _check_choice("likelihood", likelihood, LIKELIHOODS)
  if likelihood == "bernoulli":
    return bernoulli_log_likelihood(x, decoder_out, event_ndim)
  if likelihood == "categorical":
    return categorical_log_likelihood(x, decoder_out, event_ndim)
  if not isinstance(decoder_out, (tuple, list)) or len(decoder_out) != 2:
    raise ValueError("likelihood='gaussian' needs decoder_fn(z) -> (mean, log_var), got "
                     f"{type(decoder_out).__name__}")
  mean, log_var = decoder_out
  return gaussian_log_likelihood(x, mean, log_var, event_ndim)


# ----------------------------------------------------------------------------
# Latent densities and KL terms.
# ----------------------------------------------------------------------------
def normal_log_prob(z, mu, log_var):
  """log N(z; mu, diag exp(log_var)) summed over the last (latent) axis."""
  return gaussian_log_likelihood(z, mu, log_var, event_ndim=1)


def standard_normal_log_prob(z):
  """log N(z; 0, I) = -0.5 sum_j (log(2 pi) + z_j^2), summed over the last axis."""
  return -0.5 * jnp.sum(_LOG_2PI + jnp.square(z), axis=-1)


def kl_standard_normal(mu, log_var):
  """Closed-form KL(N(mu, diag sigma^2) || N(0, I)) per example (Kingma & Welling 2014, App. B).

  KL = 0.5 sum_j (sigma_j^2 + mu_j^2 - 1 - log sigma_j^2), computed as
  0.5 sum_j (expm1(log_var_j) - log_var_j + mu_j^2) so that sigma ~ 1 does not cancel.
  """
  return 0.5 * jnp.sum(jnp.expm1(log_var) - log_var + jnp.square(mu), axis=-1)


def kl_monte_carlo(z, mu, log_var):
  """Single-sample KL estimate log q(z|x) - log p(z) at z ~ q (unbiased for the KL)."""
  return normal_log_prob(z, mu, log_var) - standard_normal_log_prob(z)


# ----------------------------------------------------------------------------
# Latent samples: example b's k samples come from fold_in(key, b).
# ----------------------------------------------------------------------------
def _check_posterior(mu, log_var):
  if mu.ndim != 2 or jnp.shape(log_var) != mu.shape:
    raise ValueError("mu and log_var must both have shape (batch, latent_dim), got "
                     f"mu {mu.shape}, log_var {jnp.shape(log_var)}")


def _draw_latents(key, mu, log_var, k: int):
  """z, shape (k, batch, latent_dim); example b: rsample_normal(fold_in(key, b), mu_b, ...)."""
  _check_posterior(mu, log_var)
  keys = jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(mu.shape[0]))
  draw = lambda kb, m, lv: rsample_normal(kb, jnp.broadcast_to(m, (k, *m.shape)), lv)
  return jax.vmap(draw, out_axes=1)(keys, mu, log_var)


def _log_weight_terms(key, x, mu, log_var, decoder_fn, k, likelihood, event_ndim):
  """(log p(x|z_i), log p(z_i), log q(z_i|x)), each (k, batch), at k reparameterized z_i ~ q."""
  z = _draw_latents(key, mu, log_var, k)
  log_px_z = log_likelihood(x, decoder_fn(z), likelihood, event_ndim)
  return log_px_z, standard_normal_log_prob(z), normal_log_prob(z, mu, log_var)


# ----------------------------------------------------------------------------
# ELBO and its beta / capacity variants.
# ----------------------------------------------------------------------------
class ElboTerms(NamedTuple):
  """Per-example ELBO = recon - kl (each shape (batch,))."""
  elbo: jax.Array
  recon: jax.Array  # single-sample estimate of E_q[log p(x|z)]
  kl: jax.Array     # closed form ("analytic") or log q(z|x) - log p(z) at the sample ("mc")


def elbo(key, x, mu, log_var, decoder_fn: Callable, *, likelihood: str = "bernoulli",
         kl: str = "analytic", event_ndim: int = 1) -> ElboTerms:
  """Per-example evidence lower bound with one reparameterized sample (Kingma & Welling 2014).

  ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)) <= log p(x), estimated with one
  z = mu + exp(log_var / 2) eps. kl="analytic" uses the closed form
  (kl_standard_normal); kl="mc" uses log q(z|x) - log p(z) at the same z, which
  makes the estimate equal to the IWAE bound with k = 1 (Burda et al. 2016).

  Args:
    key: PRNG key (example b uses fold_in(key, b)).
    x: data, shape (batch, *event) with len(event) == event_ndim.
    mu, log_var: q(z|x) parameters, shape (batch, latent_dim).
    decoder_fn: z (..., latent_dim) -> logits or (mean, log_var) (see module doc).
    likelihood: "bernoulli" | "gaussian" | "categorical".
    kl: "analytic" | "mc".
  """
  _check_choice("likelihood", likelihood, LIKELIHOODS)
  _check_choice("kl", kl, KL_ESTIMATORS)
  log_px_z, log_pz, log_qz = _log_weight_terms(key, x, mu, log_var, decoder_fn, 1, likelihood,
                                               event_ndim)
  recon = log_px_z[0]
  kl_value = kl_standard_normal(mu, log_var) if kl == "analytic" else log_qz[0] - log_pz[0]
  return ElboTerms(recon - kl_value, recon, kl_value)


def beta_vae_loss(recon, kl, beta=1.0):
  """beta-VAE loss (Higgins et al. 2017): mean_b [-recon_b + beta kl_b]; beta = 1 is -ELBO.

  recon, kl: per-example terms (ElboTerms). beta >= 0 (checked when concrete).
  """
  _check_nonnegative("beta", beta)
  return jnp.mean(-recon + beta * kl)


def capacity_schedule(step, capacity_max, num_steps):
  """Linearly ramped KL capacity (Burgess et al. 2018).

  C(step) = capacity_max * min(step / num_steps, 1), in nats.
  """
  _check_nonnegative("capacity_max", capacity_max)
  _check_count("num_steps", num_steps)
  return capacity_max * jnp.clip(jnp.asarray(step, jnp.float32) / num_steps, 0.0, 1.0)


def capacity_vae_loss(recon, kl, capacity, gamma):
  """Capacity-annealed beta-VAE (Burgess et al. 2018): mean_b(-recon_b) + gamma |mean_b(kl_b) - C|.

  The target C (nats) applies to the batch-averaged KL, as in the paper; ramp it
  with capacity_schedule. capacity >= 0 and gamma >= 0 (checked when concrete).
  """
  _check_nonnegative("capacity", capacity)
  _check_nonnegative("gamma", gamma)
  return jnp.mean(-recon) + gamma * jnp.abs(jnp.mean(kl) - capacity)


# ----------------------------------------------------------------------------
# Importance-weighted bound and NLL estimates.
# ----------------------------------------------------------------------------
def log_importance_weights(key, x, mu, log_var, decoder_fn: Callable, k: int,
                           likelihood: str = "bernoulli", event_ndim: int = 1):
  """Importance log-weights log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x), shape (k, batch)."""
  log_px_z, log_pz, log_qz = _log_weight_terms(key, x, mu, log_var, decoder_fn, k, likelihood,
                                               event_ndim)
  return log_px_z + log_pz - log_qz


def iwae_bound(key, x, mu, log_var, decoder_fn: Callable, *, k: int,
               likelihood: str = "bernoulli", event_ndim: int = 1, chunk_size: int | None = None):
  """Per-example IWAE bound L_k (Burda et al. 2016).

  L_k(x) = logsumexp_i [log p(x|z_i) + log p(z_i) - log q(z_i|x)] - log k,
  z_1..z_k ~ q(z|x) reparameterized. ELBO = L_1 <= E L_k <= E L_{k+1} <= log p(x),
  and L_k -> log p(x) as k -> infinity; -L_k for large k is the usual NLL estimate.

  chunk_size: None draws all k samples at once (memory ~ k x batch decoder
  outputs). Otherwise a lax.scan over ceil(k / chunk_size) chunks keeps a running
  logsumexp, so memory is bounded by one chunk; chunk c draws from
  fold_in(key, c), and the samples past k in the last chunk are masked out.
  Differentiable either way (pathwise gradients through rsample_normal).
  """
  _check_count("k", k)
  _check_choice("likelihood", likelihood, LIKELIHOODS)
  if chunk_size is None or chunk_size >= k:
    log_w = log_importance_weights(key, x, mu, log_var, decoder_fn, k, likelihood, event_ndim)
    return jax.nn.logsumexp(log_w, axis=0) - math.log(k)
  _check_count("chunk_size", chunk_size)
  num_chunks = -(-k // chunk_size)

  def body(running, c):
    log_w = log_importance_weights(jax.random.fold_in(key, c), x, mu, log_var, decoder_fn,
                                   chunk_size, likelihood, event_ndim)
    valid = (c * chunk_size + jnp.arange(chunk_size) < k)[:, None]
    log_w = jnp.where(valid, log_w, -jnp.inf)
    return jnp.logaddexp(running, jax.nn.logsumexp(log_w, axis=0)), None

  init = jnp.full((mu.shape[0],), -jnp.inf, jnp.result_type(mu, jnp.float32))
  total, _ = jax.lax.scan(body, init, jnp.arange(num_chunks))
  return total - math.log(k)


class LogWeights(NamedTuple):
  """Per-sample terms of the importance weights, each (num_samples, batch)."""
  log_px_z: jax.Array  # log p(x|z_i)
  log_pz: jax.Array    # log p(z_i)
  log_qz: jax.Array    # log q(z_i|x)

  @property
  def log_w(self):
    return self.log_px_z + self.log_pz - self.log_qz


def log_weight_samples(key, x, mu, log_var, decoder_fn: Callable, *, num_samples: int,
                       chunk_size: int, likelihood: str = "bernoulli",
                       event_ndim: int = 1) -> LogWeights:
  """num_samples independent importance-weight terms per example, drawn chunk by chunk.

  A lax.scan over ceil(num_samples / chunk_size) chunks (chunk c from fold_in(key, c))
  bounds the decoder's working memory by one chunk; only the (num_samples, batch)
  terms are kept. Feed disjoint slices of .log_w to iwae_estimates to get independent
  estimates of E[L_k] for several k from one compiled loop.
  """
  _check_count("num_samples", num_samples)
  _check_count("chunk_size", chunk_size)
  _check_choice("likelihood", likelihood, LIKELIHOODS)
  num_chunks = -(-num_samples // chunk_size)

  def body(_, c):
    terms = _log_weight_terms(jax.random.fold_in(key, c), x, mu, log_var, decoder_fn,
                              chunk_size, likelihood, event_ndim)
    return None, terms

  _, terms = jax.lax.scan(body, None, jnp.arange(num_chunks))
  return LogWeights(*(t.reshape(num_chunks * chunk_size, -1)[:num_samples] for t in terms))


def iwae_estimates(log_w, k: int):
  """Independent L_k estimates from log-weights (n, batch): (n // k, batch) values.

  Group g is logsumexp(log_w[g k:(g + 1) k]) - log k (Burda et al. 2016); n must be a
  multiple of k.
  """
  _check_count("k", k)
  n = log_w.shape[0]
  if n % k:
    raise ValueError(f"log_w has {n} samples, not a multiple of k={k}")
  groups = log_w.reshape(n // k, k, *log_w.shape[1:])
  return jax.nn.logsumexp(groups, axis=1) - math.log(k)


def iwae_nll(key, x, mu, log_var, decoder_fn: Callable, *, k: int = 5000,
             chunk_size: int = 500, likelihood: str = "bernoulli", event_ndim: int = 1):
  """Per-example NLL estimate -L_k with large k, chunked (Burda et al. 2016 use k = 5000).

  An upper bound on -log p(x) in expectation that tightens as k grows.
  """
  return -iwae_bound(key, x, mu, log_var, decoder_fn, k=k, likelihood=likelihood,
                     event_ndim=event_ndim, chunk_size=chunk_size)
