"""Tests for research.data.gmm: closed forms against autodiff, Monte Carlo, Tweedie.

Most checks go through a few jitted wrappers (one compile per shape) because
eager JAX compiles every primitive separately, which dominates test time on a
small CPU.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from research.data import gmm as G

_sample = jax.jit(G.sample, static_argnums=2)
_sample_with_components = jax.jit(G.sample_with_components, static_argnums=2)
_random_mixture = jax.jit(G.random_mixture, static_argnums=(1, 2))


@jax.jit
def _everything(g, x, alpha, sigma):
  """All closed forms at (x, alpha, sigma), plus autodiff references.

  Row i of log p depends on x_i only, so grad of the sum is the per-row grad.
  """
  lp_t = lambda z: G.marginal_log_prob(g, z, alpha, sigma)
  lp_0 = lambda z: G.log_prob(g, z)
  return dict(
      log_prob=G.log_prob(g, x),
      score=G.score(g, x),
      grad_log_prob=jax.grad(lambda z: jnp.sum(lp_0(z)))(x),
      marginal_log_prob=lp_t(x),
      marginal_score=G.marginal_score(g, x, alpha, sigma),
      grad_marginal_log_prob=jax.grad(lambda z: jnp.sum(lp_t(z)))(x),
      x0=G.x0_posterior_mean(g, x, alpha, sigma),
      eps=G.eps(g, x, alpha, sigma),
      resp=G.responsibilities(g, x, alpha, sigma),
  )


def _mix8():
  return _random_mixture(jax.random.key(0), 5, 8)


def _points(seed, n=16, d=8, scale=1.0):
  return jnp.asarray(scale * np.random.default_rng(seed).normal(size=(n, d)),
                     jnp.float32)


# ---------------------------------------------------------------------------
# Scores against autodiff, finite far away.


@pytest.mark.parametrize("alpha,sigma", [(0.8, 0.6), (0.1, 0.995), (1.0, 5.0),
                                         (1.0, 0.0), (0.0, 1.0)])
@pytest.mark.parametrize("scale", [1.0, 5.0, 1e3])
def test_scores_match_autodiff(alpha, sigma, scale):
  out = _everything(_mix8(), _points(1, scale=scale), alpha, sigma)
  for v in out.values():
    assert np.all(np.isfinite(v))
  np.testing.assert_allclose(out["score"], out["grad_log_prob"], rtol=1e-4,
                             atol=1e-4 * scale)
  np.testing.assert_allclose(out["marginal_score"], out["grad_marginal_log_prob"],
                             rtol=1e-4, atol=1e-4 * scale)
  np.testing.assert_allclose(out["resp"].sum(-1), 1.0, rtol=1e-5)


def test_far_away_score_points_back_to_the_mixture():
  g = G.ring(8, 2.0, 0.1)
  x = jnp.array([[1e4, 0.0], [0.0, -1e5], [-3e3, 3e3]])
  out = _everything(g, x, 1.0, 0.0)
  assert np.all(np.isfinite(out["score"])) and np.all(np.isfinite(out["log_prob"]))
  # Pointing inwards: <score, x> < 0.
  assert np.all(np.sum(out["score"] * x, -1) < 0)


def test_per_example_alpha_sigma():
  g = _mix8()
  n = 16
  x = _points(3, scale=3.0)
  t = jnp.linspace(0.05, 0.95, n)
  alpha, sigma = jnp.cos(0.5 * jnp.pi * t), jnp.sin(0.5 * jnp.pi * t)
  batched = _everything(g, x, alpha, sigma)
  single = jax.jit(jax.vmap(_everything, in_axes=(None, 0, 0, 0)))(
      g, x[:, None], alpha, sigma)      # each example alone, batch of 1
  for k in ("marginal_score", "x0", "eps", "marginal_log_prob"):
    np.testing.assert_allclose(batched[k], single[k][:, 0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(batched["marginal_score"],
                             batched["grad_marginal_log_prob"], rtol=1e-4, atol=1e-4)
  # A trailing singleton axis (n, 1) is accepted too.
  col = _everything(g, x, alpha[:, None], sigma[:, None])
  np.testing.assert_allclose(col["x0"], batched["x0"], rtol=1e-6)


def test_marginal_is_a_mixture_with_the_same_density():
  g = _mix8()
  x = _points(4, scale=3.0)
  gt = G.marginal(g, 0.6, 0.8)
  out_t = _everything(gt, x, 1.0, 0.0)
  out = _everything(g, x, 0.6, 0.8)
  np.testing.assert_allclose(out_t["log_prob"], out["marginal_log_prob"], rtol=1e-5)
  np.testing.assert_allclose(out_t["score"], out["marginal_score"], rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_allclose(gt.stds, np.sqrt(0.36 * g.stds**2 + 0.64), rtol=1e-6)
  # alpha = 1, sigma = 0 is the data distribution itself.
  out_0 = _everything(g, x, 1.0, 0.0)
  np.testing.assert_allclose(out_0["marginal_log_prob"], out_0["log_prob"], rtol=1e-6)


# ---------------------------------------------------------------------------
# Posterior mean and eps.


@pytest.mark.parametrize("alpha,sigma", [(0.8, 0.6), (0.3, 0.95), (1.0, 2.0)])
def test_tweedie_and_eps_identities(alpha, sigma):
  x = _points(5, scale=4.0)
  out = _everything(_mix8(), x, alpha, sigma)
  score_t, x0, e = out["marginal_score"], out["x0"], out["eps"]
  # Tweedie: E[x0 | x_t] = (x + sigma^2 grad log p_t) / alpha.
  np.testing.assert_allclose(x0, (x + sigma**2 * score_t) / alpha, rtol=1e-4,
                             atol=1e-4)
  np.testing.assert_allclose(e, -sigma * score_t, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(e, (x - alpha * x0) / sigma, rtol=1e-4, atol=1e-4)


def test_x0_posterior_mean_matches_importance_sampling():
  # Self-normalised importance sampling with the prior as proposal:
  # E[x0 | x_t] = sum_i N(x; alpha x0_i, sigma^2) x0_i / sum_i N(...).
  g = G.ring(6, 2.0, 0.3)
  alpha, sigma = 0.8, 0.6
  x = jnp.array([[0.0, 0.0], [1.5, 0.3], [-0.5, 1.7], [3.0, -2.0]])

  @jax.jit
  def importance_sampling(key):
    x0s = G.sample(key, g, 200_000)
    logw = -0.5 * jnp.sum((x[:, None] - alpha * x0s[None])**2, -1) / sigma**2
    return jax.nn.softmax(logw, axis=-1) @ x0s

  mc = importance_sampling(jax.random.key(6))
  np.testing.assert_allclose(_everything(g, x, alpha, sigma)["x0"], mc, atol=0.02)


def test_edge_coefficients_are_finite():
  g = _mix8()
  x = _points(7, scale=3.0)
  # alpha = 0: x_t carries no information, E[x0 | x_t] is the prior mean.
  prior_mean = g.weights @ g.means
  np.testing.assert_allclose(_everything(g, x, 0.0, 1.0)["x0"],
                             jnp.broadcast_to(prior_mean, x.shape), rtol=1e-5, atol=1e-5)
  # sigma = 0: no noise, eps is 0 (finite) and the denoiser returns x.
  out = _everything(g, x, 1.0, 0.0)
  np.testing.assert_allclose(out["eps"], 0.0)
  np.testing.assert_allclose(out["x0"], x, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# Sampling.


def test_sampling_matches_weights_and_moments():
  g = _random_mixture(jax.random.key(8), 4, 3, mean_scale=2.0)
  n = 100_000
  x, k = _sample_with_components(jax.random.key(9), g, n)
  assert x.shape == (n, 3) and x.dtype == jnp.float32 and k.shape == (n,)
  counts = np.bincount(np.asarray(k), minlength=4)
  w64 = np.asarray(g.weights, np.float64)
  p = stats.chisquare(counts, n * w64 / w64.sum()).pvalue
  assert p > 1e-3, (counts, g.weights)
  w, mu, s = (np.asarray(a, np.float64) for a in (g.weights, g.means, g.stds))
  mean = w @ mu
  cov = np.einsum("k,ki,kj->ij", w, mu, mu) + np.sum(w * s**2) * np.eye(3) \
      - np.outer(mean, mean)
  xn = np.asarray(x, np.float64)
  np.testing.assert_allclose(xn.mean(0), mean, atol=0.03)
  np.testing.assert_allclose(np.cov(xn.T), cov, atol=0.08)
  # Within-component spread matches s_k.
  for j in range(4):
    r = xn[np.asarray(k) == j] - mu[j]
    np.testing.assert_allclose(r.std(), s[j], rtol=0.03)


def test_forward_process_matches_marginal():
  g = G.ring(4, 2.0, 0.2)
  alpha, sigma = 0.6, 0.8
  gt = G.marginal(g, alpha, sigma)

  @jax.jit
  def forward(key):
    k1, k2 = jax.random.split(key)
    x0 = G.sample(k1, g, 50_000)
    xt = alpha * x0 + sigma * jax.random.normal(k2, x0.shape)
    return xt, G.marginal_log_prob(g, xt, alpha, sigma)

  @jax.jit
  def from_marginal(key):
    xm = G.sample(key, gt, 50_000)
    return xm, G.log_prob(gt, xm)

  xt, lp_t = forward(jax.random.key(10))
  xm, lp_m = from_marginal(jax.random.key(11))
  np.testing.assert_allclose(np.cov(np.asarray(xt).T), np.cov(np.asarray(xm).T),
                             atol=0.04)
  # Mean log-density of samples = negative entropy; both estimates agree.
  np.testing.assert_allclose(lp_t.mean(), lp_m.mean(), atol=0.03)


def test_sampling_is_deterministic_per_key():
  g = _mix8()
  a = _sample(jax.random.key(1), g, 10)
  np.testing.assert_array_equal(a, _sample(jax.random.key(1), g, 10))
  assert not np.allclose(a, _sample(jax.random.key(2), g, 10))


# ---------------------------------------------------------------------------
# Normalisation.


def test_log_prob_integrates_to_one_1d():
  g = G.GaussianMixture([0.2, 0.5, 0.3], [[-2.0], [0.5], [3.0]], [0.3, 1.0, 0.5])
  grid = np.linspace(-10, 12, 8001)
  x = jnp.asarray(grid[:, None], jnp.float32)
  for alpha, sigma in ((1.0, 0.0), (0.5, 0.9)):
    lp = _everything(g, x, alpha, sigma)["marginal_log_prob"]
    dens = np.exp(np.asarray(lp, np.float64))
    np.testing.assert_allclose(np.trapezoid(dens, grid), 1.0, atol=1e-4)


def test_log_prob_integrates_to_one_2d():
  g = G.GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [1.0, -0.5]], [0.4, 0.7])
  lin = np.linspace(-5, 5, 401)
  xx, yy = np.meshgrid(lin, lin, indexing="ij")
  pts = jnp.asarray(np.stack([xx, yy], -1), jnp.float32)        # (401, 401, 2)
  dens = np.exp(np.asarray(jax.jit(G.log_prob)(g, pts), np.float64))
  total = np.trapezoid(np.trapezoid(dens, lin, axis=1), lin)
  np.testing.assert_allclose(total, 1.0, atol=1e-3)


# ---------------------------------------------------------------------------
# Transformations.


class TransformTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_functions_with_and_without_jit(self):
    g = G.ring(3, 1.0, 0.5)
    x = jnp.array([[0.1, 0.2], [1.0, -1.0]])

    @self.variant
    def all_outputs(g, x, a, s):
      return (G.log_prob(g, x), G.score(g, x), G.marginal_log_prob(g, x, a, s),
              G.marginal_score(g, x, a, s), G.x0_posterior_mean(g, x, a, s),
              G.eps(g, x, a, s), G.responsibilities(g, x, a, s))

    out = all_outputs(g, x, 0.7, 0.7)
    ref = _everything(g, x, 0.7, 0.7)
    ref = (ref["log_prob"], ref["score"], ref["marginal_log_prob"],
           ref["marginal_score"], ref["x0"], ref["eps"], ref["resp"])
    chex.assert_trees_all_close(out, ref, rtol=1e-5, atol=1e-5)

  def test_vmap_over_mixtures_and_single_points(self):
    g = _mix8()
    x = _points(13)
    alpha = jnp.linspace(0.2, 0.9, 16)
    sigma = jnp.sqrt(1 - alpha**2)

    @jax.jit
    def via_batched_mixtures(g, x, alpha, sigma):
      # vmap over a batch of mixtures (the pytree gets a leading axis).
      gs = jax.vmap(G.marginal, in_axes=(None, 0, 0))(g, alpha, sigma)
      return gs.means.shape, jax.vmap(G.log_prob)(gs, x), G.log_prob(g, x[0])

    shape, lp, lp_single = via_batched_mixtures(g, x, alpha, sigma)
    assert shape == (16, 5, 8) and lp_single.shape == ()
    np.testing.assert_allclose(lp, _everything(g, x, alpha, sigma)["marginal_log_prob"],
                               rtol=1e-5)

  def test_pytree_and_jitted_constructors(self):
    g = _mix8()
    assert _sample(jax.random.key(0), g, 7).shape == (7, 8)
    assert np.all(np.asarray(g.weights) >= 0.1 / 5)
    np.testing.assert_allclose(g.weights.sum(), 1.0, rtol=1e-6)
    leaves, treedef = jax.tree_util.tree_flatten(g)
    assert len(leaves) == 3
    g2 = jax.tree_util.tree_unflatten(treedef, leaves)
    assert isinstance(g2, G.GaussianMixture) and g2.dim == 8 and g2.num_components == 5

  def test_no_retrace_for_new_values(self):

    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(g, x, a, s):
      return G.marginal_score(g, x, a, s)

    x = _points(14, n=4)
    f(_mix8(), x, 0.5, 0.5)
    f(_random_mixture(jax.random.key(3), 5, 8), x + 1, 0.2, 0.9)


# ---------------------------------------------------------------------------
# Constructors and input checks.


def test_ring_and_grid_geometry():
  r = G.ring(8, 2.0, 0.1)
  np.testing.assert_allclose(np.linalg.norm(r.means, axis=-1), 2.0, rtol=1e-6)
  np.testing.assert_allclose(r.means[0], [2.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(r.weights, 1 / 8)
  gr = G.grid(5, 1.0, 0.05)
  np.testing.assert_allclose(np.unique(gr.means[:, 0]), [-2, -1, 0, 1, 2], atol=1e-6)
  assert gr.means.shape == (25, 2) and len({tuple(m) for m in np.asarray(gr.means)}) == 25
  np.testing.assert_allclose(gr.stds, 0.05)


@pytest.mark.parametrize("kwargs,name", [
    (dict(weights=[0.5, 0.6], means=[[0.0], [1.0]], stds=[1.0, 1.0]), "weights"),
    (dict(weights=[-0.5, 1.5], means=[[0.0], [1.0]], stds=[1.0, 1.0]), "weights"),
    (dict(weights=[[0.5, 0.5]], means=[[0.0], [1.0]], stds=[1.0, 1.0]), "weights"),
    (dict(weights=[0.5, 0.5], means=[0.0, 1.0], stds=[1.0, 1.0]), "means"),
    (dict(weights=[0.5, 0.5], means=[[0.0], [1.0], [2.0]], stds=1.0), "means"),
    (dict(weights=[0.5, 0.5], means=[[0.0], [np.nan]], stds=1.0), "means"),
    (dict(weights=[0.5, 0.5], means=[[0.0], [1.0]], stds=[1.0, 0.0]), "stds"),
    (dict(weights=[0.5, 0.5], means=[[0.0], [1.0]], stds=[1.0, 1.0, 1.0]), "stds"),
])
def test_constructor_rejects_bad_input(kwargs, name):
  with pytest.raises(ValueError, match=name):
    G.GaussianMixture(**kwargs)


def test_functions_reject_bad_input():
  g = _mix8()
  with pytest.raises(ValueError, match="x must"):
    G.log_prob(g, jnp.zeros((3, 2)))
  with pytest.raises(ValueError, match="alpha"):
    G.marginal_score(g, jnp.zeros((3, 8)), jnp.ones((4,)), 0.5)
  with pytest.raises(ValueError, match="sigma"):
    G.eps(g, jnp.zeros((3, 8)), 0.5, jnp.ones((2,)))
  with pytest.raises(ValueError, match="alpha"):
    G.marginal(g, jnp.ones((2,)), 0.5)
  for n in (0, -3, 2.5):
    with pytest.raises(ValueError, match="n must"):
      G.sample(jax.random.key(0), g, n)
  with pytest.raises(ValueError, match="num_modes"):
    G.ring(0, 1.0, 0.1)
  with pytest.raises(ValueError, match="std"):
    G.grid(3, 1.0, 0.0)
  with pytest.raises(ValueError, match="dim"):
    G.random_mixture(jax.random.key(0), 3, 0)
