"""Analytic isotropic Gaussian mixtures: sampling, log p, score and E[x0 | x_t].

The mixture is

    p(x0) = sum_k w_k N(x0; mu_k, s_k^2 I_d),    w_k >= 0, sum_k w_k = 1, s_k > 0,

with one isotropic standard deviation s_k per component. Under the forward
process x_t = alpha x0 + sigma eps, eps ~ N(0, I) (VP when alpha^2 + sigma^2 = 1,
VE when alpha = 1; any alpha >= 0, sigma >= 0 with alpha^2 s_k^2 + sigma^2 > 0
works), the marginal is again an isotropic mixture

    p_t(x) = sum_k w_k N(x; alpha mu_k, v_k I),    v_k = alpha^2 s_k^2 + sigma^2,

so log p_t, its score, the posterior mean E[x0 | x_t] (the ideal denoiser) and
E[eps | x_t] are all available in closed form. They are the ground truth against
which samplers, losses and metrics are tested (cf. the analytic-GMM checks in
Karras et al. 2022, "Elucidating the design space of diffusion models").

Conventions:
  * `x` has shape (..., d): any batch shape, the last axis is the data dimension.
  * `alpha`, `sigma` are scalars or arrays with one value per example, i.e.
    broadcastable to x.shape[:-1] (a trailing singleton axis, shape (..., 1), is
    also accepted). They are not time: the caller maps t -> (alpha_t, sigma_t).
  * Everything is float32, pure and jittable; `GaussianMixture` is a pytree.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "GaussianMixture",
    "sample",
    "sample_with_components",
    "log_prob",
    "score",
    "responsibilities",
    "marginal",
    "marginal_log_prob",
    "marginal_score",
    "x0_posterior_mean",
    "eps",
    "ring",
    "grid",
    "random_mixture",
]

_WEIGHT_SUM_TOL = 1e-4


def _is_concrete(a) -> bool:
  return not isinstance(a, jax.core.Tracer)


@jax.tree_util.register_pytree_node_class
class GaussianMixture:
  """Isotropic Gaussian mixture p(x) = sum_k w_k N(x; mu_k, s_k^2 I_d) (a pytree).

  Attributes:
    weights: (K,) mixture weights w_k, nonnegative, summing to 1.
    means: (K, d) component means mu_k.
    stds: (K,) per-component isotropic standard deviations s_k > 0.

  The constructor checks shapes always and values whenever they are concrete
  (not traced); a scalar `stds` is broadcast to (K,). Weights are renormalised
  to remove float rounding after the sum-to-one check (tolerance 1e-4).
  Unflattening inside jax transformations bypasses the checks.
  """

  def __init__(self, weights, means, stds):
    weights = jnp.asarray(weights, jnp.float32)
    means = jnp.asarray(means, jnp.float32)
    stds = jnp.asarray(stds, jnp.float32)
    if weights.ndim != 1 or weights.shape[0] < 1:
      raise ValueError(
          f"weights must have shape (K,) with K >= 1, got shape {weights.shape}.")
    num_components = weights.shape[0]
    if means.ndim != 2 or means.shape[0] != num_components or means.shape[1] < 1:
      raise ValueError(
          f"means must have shape (K, d) = ({num_components}, d) with d >= 1 to"
          f" match weights, got shape {means.shape}.")
    if stds.ndim == 0:
      stds = jnp.full((num_components,), stds)
    if stds.shape != (num_components,):
      raise ValueError(
          f"stds must be a scalar or have shape (K,) = ({num_components},), got"
          f" shape {stds.shape}.")
    if _is_concrete(weights):
      w = np.asarray(weights)
      if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be finite and nonnegative, got {w}.")
      if abs(float(w.sum()) - 1.0) > _WEIGHT_SUM_TOL:
        raise ValueError(f"weights must sum to 1, got sum {float(w.sum())}.")
      weights = weights / jnp.sum(weights)
    if _is_concrete(means) and not np.all(np.isfinite(np.asarray(means))):
      raise ValueError("means must be finite.")
    if _is_concrete(stds):
      s = np.asarray(stds)
      if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"stds must be finite and > 0, got {s}.")
    self.weights = weights
    self.means = means
    self.stds = stds

  @property
  def num_components(self) -> int:
    return self.weights.shape[0]

  @property
  def dim(self) -> int:
    return self.means.shape[1]

  def tree_flatten(self):
    return (self.weights, self.means, self.stds), None

  @classmethod
  def tree_unflatten(cls, aux, children):
    del aux
    obj = object.__new__(cls)
    obj.weights, obj.means, obj.stds = children
    return obj

  def __repr__(self) -> str:
    return (f"GaussianMixture(num_components={self.weights.shape[0]},"
            f" dim={self.means.shape[-1]})")


# ----------------------------------------------------------------------------
# Internal helpers.


def _check_x(gmm: GaussianMixture, x):
  x = jnp.asarray(x, jnp.float32)
  if x.ndim < 1 or x.shape[-1] != gmm.means.shape[-1]:
    raise ValueError(
        f"x must have shape (..., d) with d = {gmm.means.shape[-1]} (the"
        f" mixture dimension), got shape {x.shape}.")
  return x


def _per_example(value, name: str, batch_shape):
  """Broadcasts a scalar / per-example coefficient to x.shape[:-1]."""
  value = jnp.asarray(value, jnp.float32)
  if value.ndim == len(batch_shape) + 1 and value.shape[-1] == 1:
    value = value[..., 0]
  try:
    return jnp.broadcast_to(value, batch_shape)
  except ValueError:
    raise ValueError(
        f"{name} must be a scalar or broadcastable to x.shape[:-1] ="
        f" {tuple(batch_shape)} (one value per example), got shape"
        f" {value.shape}.") from None


def _component_terms(gmm: GaussianMixture, x, alpha, sigma):
  """Per-component quantities of p_t at x.

  Returns (log_joint, diff, var), with shapes (..., K), (..., K, d), (..., K):
    diff_k      = x - alpha mu_k,
    var_k       = alpha^2 s_k^2 + sigma^2,
    log_joint_k = log w_k + log N(x; alpha mu_k, var_k I)
                = log w_k - ||diff_k||^2 / (2 var_k) - d/2 log(2 pi var_k).
  """
  d = gmm.means.shape[-1]
  a = alpha[..., None]                                   # (..., 1)
  var = a**2 * gmm.stds**2 + sigma[..., None]**2         # (..., K)
  diff = x[..., None, :] - a[..., None] * gmm.means      # (..., K, d)
  sq = jnp.sum(diff**2, axis=-1)                         # (..., K)
  log_w = jnp.log(gmm.weights)                           # -inf for w_k = 0
  log_joint = (log_w - 0.5 * sq / var
               - 0.5 * d * (math.log(2 * math.pi) + jnp.log(var)))
  return log_joint, diff, var


def _prepare(gmm, x, alpha, sigma):
  x = _check_x(gmm, x)
  batch_shape = x.shape[:-1]
  alpha = _per_example(alpha, "alpha", batch_shape)
  sigma = _per_example(sigma, "sigma", batch_shape)
  return x, alpha, sigma


# ----------------------------------------------------------------------------
# Data distribution p(x0).


def sample_with_components(key, gmm: GaussianMixture, n: int):
  """Draws n samples and their component labels from the mixture.

  k ~ Categorical(w), x0 = mu_k + s_k z, z ~ N(0, I_d) (ancestral sampling).

  Args:
    key: PRNG key.
    gmm: the mixture.
    n: number of samples, a Python int >= 1 (static under jit).

  Returns:
    (x0, k): float32 (n, d) samples and int32 (n,) component indices.
  """
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f"n must be a Python int >= 1, got n={n!r}.")
  key_k, key_z = jax.random.split(key)
  k = jax.random.categorical(key_k, jnp.log(gmm.weights), shape=(int(n),))
  z = jax.random.normal(key_z, (int(n), gmm.means.shape[-1]), jnp.float32)
  x0 = gmm.means[k] + gmm.stds[k][:, None] * z
  return x0, k.astype(jnp.int32)


def sample(key, gmm: GaussianMixture, n: int):
  """Draws n samples x0 ~ p as a float32 (n, d) array.

  Ancestral sampling k ~ Categorical(w), x0 = mu_k + s_k z, z ~ N(0, I_d) (Bishop
  2006, PRML sec. 9.2); `sample_with_components` also returns k.
  """
  return sample_with_components(key, gmm, n)[0]


def log_prob(gmm: GaussianMixture, x):
  """Log density of the mixture at x (shape (..., d) -> (...)).

  log p(x) = logsumexp_k [log w_k - ||x - mu_k||^2 / (2 s_k^2)
                          - d/2 log(2 pi s_k^2)].
  """
  return marginal_log_prob(gmm, x, 1.0, 0.0)


def score(gmm: GaussianMixture, x):
  """Score grad_x log p(x) of the mixture in closed form (shape (..., d)).

  grad log p(x) = sum_k r_k(x) (mu_k - x) / s_k^2,
  r_k(x) = softmax_k(log w_k + log N(x; mu_k, s_k^2 I)) (responsibilities).
  """
  return marginal_score(gmm, x, 1.0, 0.0)


def responsibilities(gmm: GaussianMixture, x, alpha=1.0, sigma=0.0):
  """Posterior component probabilities r_k(x) = p(k | x_t = x), shape (..., K).

  r_k = softmax_k(log w_k + log N(x; alpha mu_k, (alpha^2 s_k^2 + sigma^2) I)).
  With the defaults alpha = 1, sigma = 0 this is p(k | x0 = x).
  """
  x, alpha, sigma = _prepare(gmm, x, alpha, sigma)
  log_joint, _, _ = _component_terms(gmm, x, alpha, sigma)
  return jax.nn.softmax(log_joint, axis=-1)


# ----------------------------------------------------------------------------
# Noisy marginals p_t(x) under x_t = alpha x0 + sigma eps.


def marginal(gmm: GaussianMixture, alpha, sigma) -> GaussianMixture:
  """The marginal p_t of x_t = alpha x0 + sigma eps as a GaussianMixture.

  p_t = sum_k w_k N(alpha mu_k, (alpha^2 s_k^2 + sigma^2) I). `alpha` and
  `sigma` must be scalars here (one marginal); for per-example coefficients use
  `marginal_log_prob` / `marginal_score` directly, or vmap this function.
  """
  alpha = jnp.asarray(alpha, jnp.float32)
  sigma = jnp.asarray(sigma, jnp.float32)
  if alpha.ndim != 0:
    raise ValueError(f"alpha must be a scalar, got shape {alpha.shape}.")
  if sigma.ndim != 0:
    raise ValueError(f"sigma must be a scalar, got shape {sigma.shape}.")
  stds = jnp.sqrt(alpha**2 * gmm.stds**2 + sigma**2)
  return GaussianMixture(gmm.weights, alpha * gmm.means, stds)


def marginal_log_prob(gmm: GaussianMixture, x, alpha, sigma):
  """log p_t(x) for x_t = alpha x0 + sigma eps (shape (..., d) -> (...)).

  log p_t(x) = logsumexp_k [log w_k - ||x - alpha mu_k||^2 / (2 v_k)
                            - d/2 log(2 pi v_k)],   v_k = alpha^2 s_k^2 + sigma^2.
  """
  x, alpha, sigma = _prepare(gmm, x, alpha, sigma)
  log_joint, _, _ = _component_terms(gmm, x, alpha, sigma)
  return jax.nn.logsumexp(log_joint, axis=-1)


def marginal_score(gmm: GaussianMixture, x, alpha, sigma):
  """Score grad_x log p_t(x) of the noisy marginal, in closed form (..., d).

  grad log p_t(x) = -sum_k r_k(x) (x - alpha mu_k) / v_k,
  v_k = alpha^2 s_k^2 + sigma^2, r_k = p(k | x_t = x) via a stable softmax, so
  the result is finite (and exact) far from every mode.
  """
  x, alpha, sigma = _prepare(gmm, x, alpha, sigma)
  log_joint, diff, var = _component_terms(gmm, x, alpha, sigma)
  r = jax.nn.softmax(log_joint, axis=-1)
  return -jnp.sum((r / var)[..., None] * diff, axis=-2)


def x0_posterior_mean(gmm: GaussianMixture, x, alpha, sigma):
  """Posterior mean E[x0 | x_t = x], the MMSE denoiser (shape (..., d)).

  E[x0 | x_t] = sum_k r_k(x) [mu_k + alpha s_k^2 / v_k (x - alpha mu_k)],
  v_k = alpha^2 s_k^2 + sigma^2 (Gaussian conditioning per component). It
  agrees with Tweedie's formula E[x0 | x_t] = (x + sigma^2 grad log p_t(x)) / alpha
  (Efron 2011) when alpha > 0, and stays finite at alpha = 0 (prior mean).
  """
  x, alpha, sigma = _prepare(gmm, x, alpha, sigma)
  log_joint, diff, var = _component_terms(gmm, x, alpha, sigma)
  r = jax.nn.softmax(log_joint, axis=-1)
  gain = alpha[..., None] * gmm.stds**2 / var                  # (..., K)
  post_means = gmm.means + gain[..., None] * diff              # (..., K, d)
  return jnp.sum(r[..., None] * post_means, axis=-2)


def eps(gmm: GaussianMixture, x, alpha, sigma):
  """Posterior mean noise E[eps | x_t = x] (shape (..., d)).

  E[eps | x_t] = (x - alpha E[x0 | x_t]) / sigma = -sigma grad log p_t(x)
               = sigma sum_k r_k(x) (x - alpha mu_k) / v_k,
  evaluated in the last form, which is finite also as sigma -> 0 (where it is 0).
  This is the ideal epsilon-prediction network of Ho et al. 2020.
  """
  x, alpha, sigma = _prepare(gmm, x, alpha, sigma)
  log_joint, diff, var = _component_terms(gmm, x, alpha, sigma)
  r = jax.nn.softmax(log_joint, axis=-1)
  return sigma[..., None] * jnp.sum((r / var)[..., None] * diff, axis=-2)


# ----------------------------------------------------------------------------
# Constructors.


def ring(num_modes: int, radius: float, std: float) -> GaussianMixture:
  """Equal-weight mixture of `num_modes` 2-D Gaussians on a circle.

  mu_k = radius (cos(2 pi k / K), sin(2 pi k / K)), k = 0..K-1, s_k = std,
  w_k = 1 / K (the "8 Gaussians" of Metz et al. 2017 / Grathwohl et al. 2019).
  """
  if isinstance(num_modes, bool) or not isinstance(num_modes, (int, np.integer)) \
      or num_modes < 1:
    raise ValueError(f"num_modes must be an int >= 1, got {num_modes!r}.")
  if not radius >= 0:
    raise ValueError(f"radius must be >= 0, got {radius!r}.")
  if not std > 0:
    raise ValueError(f"std must be > 0, got {std!r}.")
  angles = 2 * np.pi * np.arange(num_modes) / num_modes
  means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
  weights = np.full((num_modes,), 1.0 / num_modes)
  return GaussianMixture(weights, means, np.full((num_modes,), std))


def grid(num_per_side: int, spacing: float, std: float) -> GaussianMixture:
  """Equal-weight mixture of num_per_side^2 2-D Gaussians on a centred grid.

  mu_(i,j) = spacing (i - (m - 1) / 2, j - (m - 1) / 2), i, j = 0..m-1,
  s = std, w = 1 / m^2 (the "25 Gaussians" of Dumoulin et al. 2017, ALI).
  Component index k = i * m + j (x coordinate from i, y from j).
  """
  if isinstance(num_per_side, bool) or not isinstance(
      num_per_side, (int, np.integer)) or num_per_side < 1:
    raise ValueError(f"num_per_side must be an int >= 1, got {num_per_side!r}.")
  if not spacing > 0:
    raise ValueError(f"spacing must be > 0, got {spacing!r}.")
  if not std > 0:
    raise ValueError(f"std must be > 0, got {std!r}.")
  coords = spacing * (np.arange(num_per_side) - (num_per_side - 1) / 2)
  gx, gy = np.meshgrid(coords, coords, indexing="ij")
  means = np.stack([gx.ravel(), gy.ravel()], axis=-1)
  k = num_per_side**2
  return GaussianMixture(np.full((k,), 1.0 / k), means, np.full((k,), std))


def random_mixture(key, num_components: int, dim: int, *, mean_scale=3.0,
                   std_range=(0.2, 1.0), min_weight=0.1) -> GaussianMixture:
  """A random d-dimensional isotropic mixture for tests (jittable).

  mu_k ~ N(0, mean_scale^2 I_d); s_k ~ U(std_range); weights
  w = min_weight / K + (1 - min_weight) g, g ~ Dirichlet(1, ..., 1), so every
  component keeps at least min_weight / K of the mass.
  """
  for name, v in (("num_components", num_components), ("dim", dim)):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f"{name} must be an int >= 1, got {v!r}.")
  lo, hi = std_range
  if not 0 < lo <= hi:
    raise ValueError(f"std_range must satisfy 0 < low <= high, got {std_range!r}.")
  if not 0 <= min_weight <= 1:
    raise ValueError(f"min_weight must be in [0, 1], got {min_weight!r}.")
  key_m, key_s, key_w = jax.random.split(key, 3)
  means = mean_scale * jax.random.normal(key_m, (num_components, dim))
  stds = jax.random.uniform(key_s, (num_components,), minval=lo, maxval=hi)
  # Dirichlet(1, ..., 1) as normalised Exp(1) draws (cheaper than gamma sampling).
  e = jax.random.exponential(key_w, (num_components,))
  g = e / jnp.sum(e)
  weights = min_weight / num_components + (1 - min_weight) * g
  return GaussianMixture(weights, means, stds)
