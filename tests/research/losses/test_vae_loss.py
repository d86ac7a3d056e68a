"""Tests for research/losses/vae.py: likelihoods, KL, ELBO, beta/capacity VAE, IWAE bounds."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from research.losses import vae


def _posterior(key, batch=4, latent=3):
  k_mu, k_lv = jax.random.split(key)
  return (jax.random.normal(k_mu, (batch, latent)),
          0.5 * jax.random.normal(k_lv, (batch, latent)))


# ---------------------------------------------------------------------------
# Likelihoods.
# ---------------------------------------------------------------------------
def test_bernoulli_log_likelihood_finite_for_huge_logits_and_matches_naive():
  x = jnp.array([[1.0, 0.0, 1.0, 0.0]])
  huge = jnp.array([[1e4, 1e4, -1e4, -1e4]])
  ll = jax.jit(vae.bernoulli_log_likelihood)(x, huge)
  np.testing.assert_allclose(ll, [-2e4], rtol=1e-6)       # 0 + (-1e4) + (-1e4) + 0
  grad = jax.grad(lambda l: vae.bernoulli_log_likelihood(x, l).sum())(huge)
  assert np.isfinite(grad).all()
  # where the naive formula is finite, it agrees (float64 reference)
  logits = jax.random.normal(jax.random.key(0), (5, 7)) * 4
  xs = jax.random.uniform(jax.random.key(1), (5, 7))       # grey-scale pixels in [0, 1]
  p = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
  naive = np.sum(np.asarray(xs) * np.log(p) + (1 - np.asarray(xs)) * np.log(1 - p), axis=-1)
  np.testing.assert_allclose(vae.bernoulli_log_likelihood(xs, logits), naive, rtol=1e-5)
  # event_ndim sums over image axes
  img = xs.reshape(5, 7, 1)
  np.testing.assert_allclose(vae.bernoulli_log_likelihood(img, logits.reshape(5, 7, 1), 2),
                             naive, rtol=1e-5)


def test_gaussian_log_likelihood_matches_scipy_fixed_and_learned_variance():
  x = jax.random.normal(jax.random.key(0), (6, 3))
  mean = jax.random.normal(jax.random.key(1), (6, 3))
  log_var = jax.random.normal(jax.random.key(2), (3,))     # per-dimension, broadcast
  scale = np.exp(0.5 * np.asarray(log_var))
  expected = stats.norm.logpdf(np.asarray(x), np.asarray(mean), scale).sum(-1)
  np.testing.assert_allclose(vae.gaussian_log_likelihood(x, mean, log_var), expected, rtol=1e-5)
  fixed = stats.norm.logpdf(np.asarray(x), np.asarray(mean), np.exp(0.5 * -1.3)).sum(-1)
  np.testing.assert_allclose(vae.gaussian_log_likelihood(x, mean, -1.3), fixed, rtol=1e-5)
  np.testing.assert_allclose(vae.log_likelihood(x, (mean, -1.3), "gaussian"), fixed, rtol=1e-5)
  with pytest.raises(ValueError, match="gaussian"):
    vae.log_likelihood(x, mean, "gaussian")


# ---------------------------------------------------------------------------
# KL terms.
# ---------------------------------------------------------------------------
def test_categorical_log_likelihood_matches_a_hand_computation():
  # two pixels, three levels: x = 0 -> level 0, x = 1 -> level 2, x = 0.5 -> level 1
  logits = jnp.array([[[0.0, 1.0, 2.0], [3.0, -1.0, 0.5]]])          # (batch 1, 2 pixels, L 3)
  def log_softmax(row):
    row = np.asarray(row, np.float64)
    return row - np.log(np.sum(np.exp(row)))
  for x, levels in (([0.0, 1.0], (0, 2)), ([0.5, 0.5], (1, 1)), ([1.0, 0.0], (2, 0))):
    by_hand = log_softmax(logits[0, 0])[levels[0]] + log_softmax(logits[0, 1])[levels[1]]
    got = vae.categorical_log_likelihood(jnp.array([x]), logits, event_ndim=1)
    np.testing.assert_allclose(got, [by_hand], rtol=1e-6)
    np.testing.assert_allclose(vae.log_likelihood(jnp.array([x]), logits, "categorical"),
                               [by_hand], rtol=1e-6)
  # 17 digits levels: x = p / 16 is level p; the probabilities of all levels sum to one
  logits = jax.random.normal(jax.random.key(0), (4, 17)) * 3
  total = sum(np.exp(np.asarray(vae.categorical_log_likelihood(jnp.full((4,), p / 16), logits,
                                                               event_ndim=0)))
              for p in range(17))
  np.testing.assert_allclose(total, 1.0, rtol=1e-5)
  # importance samples (k, batch, *event, L) broadcast against x (batch, *event)
  x = jax.random.randint(jax.random.key(1), (3, 2, 2), 0, 17) / 16.0
  logits = jax.random.normal(jax.random.key(2), (5, 3, 2, 2, 17))
  out = vae.categorical_log_likelihood(x, logits, event_ndim=2)
  assert out.shape == (5, 3)
  np.testing.assert_allclose(out[4], vae.categorical_log_likelihood(x, logits[4], 2), rtol=1e-6)
  with pytest.raises(ValueError, match="L >= 2 levels"):
    vae.categorical_log_likelihood(jnp.zeros(3), jnp.zeros((3, 1)))


def test_closed_form_kl_matches_monte_carlo_average():
  # Fixed key; 200k samples per example: the MC standard error is 0.003-0.008 nats.
  # Tolerance: 5 standard errors per example (all < 0.05 nats).
  mu, log_var = _posterior(jax.random.key(0))
  n = 200_000

  @jax.jit
  def run(key):
    z = mu + jnp.exp(0.5 * log_var) * jax.random.normal(key, (n, *mu.shape))
    mc = vae.kl_monte_carlo(z, mu, log_var)
    return (vae.kl_standard_normal(mu, log_var), jnp.mean(mc, axis=0),
            jnp.std(mc, axis=0) / np.sqrt(n))

  closed, mc_mean, se = run(jax.random.key(1))
  expected = 0.5 * np.sum(np.exp(log_var) + mu**2 - 1 - log_var, -1)
  np.testing.assert_allclose(closed, expected, rtol=1e-5)
  assert np.all(se < 0.01)
  assert np.all(np.abs(mc_mean - closed) < 5 * se)
  np.testing.assert_allclose(vae.kl_standard_normal(jnp.zeros((1, 4)), jnp.zeros((1, 4))), [0.0])


def test_kl_gradient_matches_finite_differences():
  with jax.enable_x64(True):
    mu, log_var = (a.astype(jnp.float64) for a in _posterior(jax.random.key(2), 1, 3))
    f = lambda m, lv: vae.kl_standard_normal(m, lv).sum()
    g_mu, g_lv = jax.grad(f, argnums=(0, 1))(mu, log_var)
    np.testing.assert_allclose(g_mu, mu, rtol=1e-12)                       # d/dmu = mu
    np.testing.assert_allclose(g_lv, 0.5 * jnp.expm1(log_var), rtol=1e-12)  # 0.5 (sigma^2 - 1)
    eps = 1e-6
    for arg, grad in ((0, g_mu), (1, g_lv)):
      for j in range(3):
        bump = jnp.zeros_like(mu).at[0, j].set(eps)
        args_p = [mu, log_var]
        args_m = [mu, log_var]
        args_p[arg] = args_p[arg] + bump
        args_m[arg] = args_m[arg] - bump
        fd = (f(*args_p) - f(*args_m)) / (2 * eps)
        np.testing.assert_allclose(fd, grad[0, j], rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------
# ELBO, beta-VAE, capacity.
# ---------------------------------------------------------------------------
def _linear_gaussian(latent=2, data=4, s=0.5, seed=0):
  """p(z) = N(0, I), p(x|z) = N(W z + b, s^2 I) with orthogonal columns of W, so the
  exact posterior N(Sigma W^T (x - b) / s^2, Sigma), Sigma = (I + W^T W / s^2)^-1, is diagonal."""
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(data, latent)))
  w = q * np.array([1.5, 0.7])[:latent]
  b = np.linspace(-1, 1, data)
  sigma = 1.0 / (1.0 + np.sum(w**2, 0) / s**2)          # diagonal of the posterior covariance
  decoder = lambda z: (z @ jnp.asarray(w.T, jnp.float32) + jnp.asarray(b, jnp.float32),
                       jnp.float32(2 * np.log(s)))

  def posterior(x):
    mu = (np.asarray(x) - b) @ w / s**2 * sigma
    return jnp.asarray(mu, jnp.float32), jnp.asarray(np.log(sigma) * np.ones_like(mu), jnp.float32)

  def log_px(x):
    return stats.multivariate_normal(b, w @ w.T + s**2 * np.eye(data)).logpdf(np.asarray(x))

  return decoder, posterior, log_px


def test_elbo_terms_and_beta_capacity_formulas():
  decoder, posterior, _ = _linear_gaussian()
  x = jax.random.normal(jax.random.key(0), (8, 4))
  mu, log_var = posterior(x)
  terms, mc = jax.jit(lambda key: [vae.elbo(key, x, mu, log_var, decoder, likelihood="gaussian",
                                             kl=kl) for kl in ("analytic", "mc")])(
      jax.random.key(3))
  np.testing.assert_allclose(terms.elbo, terms.recon - terms.kl, rtol=1e-6)
  np.testing.assert_allclose(terms.kl, vae.kl_standard_normal(mu, log_var), rtol=1e-6)
  np.testing.assert_allclose(mc.recon, terms.recon, rtol=1e-6)   # same z, other KL estimate
  recon, kl = terms.recon, terms.kl
  np.testing.assert_allclose(vae.beta_vae_loss(recon, kl, 1.0), -np.mean(terms.elbo), rtol=1e-6)
  np.testing.assert_allclose(vae.beta_vae_loss(recon, kl, 4.0), np.mean(-recon + 4 * kl), rtol=1e-6)
  np.testing.assert_allclose(vae.beta_vae_loss(recon, kl, 0.0), -np.mean(recon), rtol=1e-6)
  c = [float(vae.capacity_schedule(s, 25.0, 100)) for s in (0, 50, 100, 1000)]
  np.testing.assert_allclose(c, [0.0, 12.5, 25.0, 25.0])
  np.testing.assert_allclose(vae.capacity_vae_loss(recon, kl, 12.5, 100.0),
                             -np.mean(recon) + 100 * abs(np.mean(kl) - 12.5), rtol=1e-6)
  # jitted with traced beta / capacity / step
  jitted = jax.jit(lambda s, g: vae.capacity_vae_loss(recon, kl,
                                                      vae.capacity_schedule(s, 25.0, 100), g))
  np.testing.assert_allclose(jitted(50, 100.0), vae.capacity_vae_loss(recon, kl, 12.5, 100.0),
                             rtol=1e-6)


# ---------------------------------------------------------------------------
# IWAE.
# ---------------------------------------------------------------------------
def test_iwae_k1_equals_mc_elbo_with_the_same_sample_and_is_batch_size_independent():
  logits_w = jax.random.normal(jax.random.key(0), (3, 10))
  decoder = lambda z: z @ logits_w
  x = (jax.random.uniform(jax.random.key(1), (6, 10)) > 0.5).astype(jnp.float32)
  mu, log_var = _posterior(jax.random.key(2), 6, 3)

  @jax.jit
  def run(key):
    return (vae.iwae_bound(key, x, mu, log_var, decoder, k=1),
            vae.elbo(key, x, mu, log_var, decoder, kl="mc").elbo,
            vae.iwae_bound(key, x, mu, log_var, decoder, k=5),
            vae.iwae_bound(key, x[:2], mu[:2], log_var[:2], decoder, k=5))

  l1, elbo, l5, l5_first_two = run(jax.random.key(4))
  np.testing.assert_allclose(l1, elbo, rtol=1e-6, atol=1e-6)
  # example b's value does not depend on the rest of the batch
  np.testing.assert_allclose(l5_first_two, l5[:2], rtol=1e-6)


def test_iwae_with_exact_posterior_is_log_px_for_every_k_chunked_or_not():
  decoder, posterior, log_px = _linear_gaussian()
  x = jax.random.normal(jax.random.key(0), (5, 4)) * 2
  mu, log_var = posterior(x)
  kw = dict(likelihood="gaussian")

  @jax.jit
  def run(key):
    keys = jax.random.split(key, 4)
    out = [vae.iwae_bound(keys[i], x, mu, log_var, decoder, k=k, **kw)
           for i, k in enumerate((1, 50))]
    # 250 = 2 full chunks of 100 + a masked half chunk: the mask must drop the padding exactly
    out.append(-vae.iwae_nll(keys[2], x, mu, log_var, decoder, k=250, chunk_size=100, **kw))
    pool = vae.log_weight_samples(keys[3], x, mu, log_var, decoder, num_samples=60,
                                  chunk_size=25, **kw)   # 3 chunks, 15 dropped
    out.append(vae.iwae_estimates(pool.log_w, 20))
    return out

  exact = log_px(x)
  *bounds, pooled = run(jax.random.key(1))
  for bound in bounds:
    np.testing.assert_allclose(bound, exact, atol=2e-4)
  assert pooled.shape == (3, 5)
  np.testing.assert_allclose(pooled, np.broadcast_to(exact, (3, 5)), atol=2e-4)


def test_iwae_with_worse_posterior_increases_in_k_below_log_px():
  decoder, posterior, log_px = _linear_gaussian()
  x = jax.random.normal(jax.random.key(0), (5, 4)) * 2
  mu, log_var = posterior(x)
  mu, log_var = mu + 0.7, log_var + 0.8           # a worse q: shifted and too wide
  kw = dict(likelihood="gaussian")

  @jax.jit
  def run(key):
    # E[L_k] estimated by averaging L_k over independent draws (2000 samples per k)
    keys = jax.random.split(key, 3)
    l1 = jnp.mean(vae.iwae_estimates(vae.log_weight_samples(
        keys[0], x, mu, log_var, decoder, num_samples=2000, chunk_size=1000, **kw).log_w, 1))
    l5, l50 = (jnp.mean(jax.vmap(lambda kk, k=k: vae.iwae_bound(kk, x, mu, log_var, decoder,
                                                                k=k, **kw))(
        jax.random.split(keys[i], 2000 // k))) for i, k in ((1, 5), (2, 50)))
    big = jnp.mean(-vae.iwae_nll(keys[2], x, mu, log_var, decoder, k=5000, chunk_size=1000, **kw))
    return l1, l5, l50, big

  l1, l5, l50, l5000 = (float(o) for o in run(jax.random.key(3)))
  exact = float(np.mean(log_px(x)))
  assert l1 < l5 - 0.1 < l50 - 0.2 < exact - 0.2, (l1, l5, l50, exact)
  # one L_5000 draw is within its Monte Carlo noise (a few 0.01 nats) of log p(x); only its
  # expectation is guaranteed <= log p(x)
  assert l50 < l5000 and abs(l5000 - exact) < 0.05, (l50, l5000, exact)


def test_iwae_gradients_flow_through_the_chunked_bound():
  decoder, posterior, _ = _linear_gaussian()
  x = jax.random.normal(jax.random.key(0), (3, 4))
  mu, log_var = posterior(x)
  f = lambda m, lv: jnp.sum(vae.iwae_bound(jax.random.key(1), x, m, lv, decoder, k=20,
                                           likelihood="gaussian", chunk_size=6))
  g_mu, g_lv = jax.jit(jax.grad(f, argnums=(0, 1)))(mu + 0.3, log_var)
  assert np.isfinite(g_mu).all() and np.isfinite(g_lv).all() and np.abs(g_mu).sum() > 0


# ---------------------------------------------------------------------------
# Bad input.
# ---------------------------------------------------------------------------
def test_bad_inputs_raise_value_errors_naming_the_argument():
  mu, log_var = _posterior(jax.random.key(0), 2, 3)
  x = jnp.zeros((2, 5))
  decoder = lambda z: jnp.zeros((*z.shape[:-1], 5))
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="k must be an integer >= 1"):
    vae.iwae_bound(key, x, mu, log_var, decoder, k=0)
  with pytest.raises(ValueError, match="chunk_size"):
    vae.iwae_bound(key, x, mu, log_var, decoder, k=10, chunk_size=0)
  with pytest.raises(ValueError, match="beta"):
    vae.beta_vae_loss(jnp.zeros(2), jnp.zeros(2), beta=-1.0)
  with pytest.raises(ValueError, match="gamma"):
    vae.capacity_vae_loss(jnp.zeros(2), jnp.zeros(2), 1.0, gamma=-1.0)
  with pytest.raises(ValueError, match="capacity"):
    vae.capacity_vae_loss(jnp.zeros(2), jnp.zeros(2), -1.0, gamma=1.0)
  with pytest.raises(ValueError, match="num_steps"):
    vae.capacity_schedule(3, 10.0, 0)
  with pytest.raises(ValueError, match="likelihood.*'poisson'"):
    vae.elbo(key, x, mu, log_var, decoder, likelihood="poisson")
  with pytest.raises(ValueError, match="likelihood"):
    vae.iwae_bound(key, x, mu, log_var, decoder, k=2, likelihood="poisson")
  with pytest.raises(ValueError, match="kl"):
    vae.elbo(key, x, mu, log_var, decoder, kl="sampled")
  with pytest.raises(ValueError, match="mu and log_var"):
    vae.elbo(key, x, mu[0], log_var[0], decoder)
  with pytest.raises(ValueError, match="multiple of k=3"):
    vae.iwae_estimates(jnp.zeros((10, 2)), 3)
  with pytest.raises(ValueError, match="num_samples"):
    vae.log_weight_samples(key, x, mu, log_var, decoder, num_samples=0, chunk_size=4)
