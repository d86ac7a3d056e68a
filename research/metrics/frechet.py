"""Fréchet distance between Gaussians fitted to feature sets (FID; Heusel et al. 2017).

For N(mu1, S1) and N(mu2, S2) the squared 2-Wasserstein (Fréchet) distance is
(Dowson & Landau 1982):

  FD = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2).

The cross term is computed without a non-symmetric matrix square root. With any
factors F_i such that S_i = F_i^T F_i, the eigenvalues of S1^1/2 S2 S1^1/2 are
those of S1 S2 = F1^T F1 F2^T F2, i.e. the squared singular values of F1 F2^T,
so

  tr (S1^1/2 S2 S1^1/2)^1/2 = ||F1 F2^T||_*   (nuclear norm: sum of singular values).

`frechet_distance` takes covariances and builds F_i = diag(sqrt(w_i)) V_i^T from a
symmetric eigendecomposition S_i = V_i diag(w_i) V_i^T, clamping the tiny
negative eigenvalues that rounding leaves in a singular covariance.
`frechet_distance_from_features` never forms a covariance: F_i = R_i from the QR
decomposition of the centred features X_i / sqrt(n_i - 1), and
tr S_i = ||X_i - mean||_F^2 / (n_i - 1), so identical sets give 0 up to float32
rounding and rank-deficient covariances (n < d) lose no accuracy to square
roots of round-off. Everything is float32, pure JAX, jittable.

"Fréchet Inception Distance" is this distance on Inception-V3 pool3 features;
this module is agnostic to the feature extractor.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["gaussian_statistics", "frechet_distance", "frechet_distance_from_features"]

_HIGHEST = jax.lax.Precision.HIGHEST


def _check_features(name, features):
  features = jnp.asarray(features, jnp.float32)
  if features.ndim != 2 or features.shape[0] < 2 or features.shape[1] < 1:
    raise ValueError(
        f"{name} must have shape (n, d) with n >= 2 samples and d >= 1 features,"
        f" got shape {features.shape}.")
  return features


def gaussian_statistics(features):
  """Mean and unbiased covariance of a feature set.

  mu = (1/n) sum_i x_i,  sigma = (1/(n-1)) sum_i (x_i - mu)(x_i - mu)^T.

  Args:
    features: (n, d) array, n >= 2.

  Returns:
    (mu, sigma) of shapes (d,) and (d, d), float32.
  """
  features = _check_features("features", features)
  mu = jnp.mean(features, axis=0)
  centred = features - mu
  sigma = jnp.matmul(centred.T, centred, precision=_HIGHEST) / (features.shape[0] - 1)
  return mu, sigma


def _trace_sqrt_from_factors(f1, f2):
  """||F1 F2^T||_* = tr (S1^1/2 S2 S1^1/2)^1/2 for S_i = F_i^T F_i."""
  cross = jnp.matmul(f1, f2.T, precision=_HIGHEST)
  return jnp.sum(jnp.linalg.svd(cross, compute_uv=False))


def _psd_factor(sigma):
  """F with F^T F = sigma (symmetrised, negative round-off eigenvalues clamped to 0)."""
  sigma = 0.5 * (sigma + sigma.T)
  w, v = jnp.linalg.eigh(sigma)
  return jnp.sqrt(jnp.maximum(w, 0.0))[:, None] * v.T


def frechet_distance(mu1, sigma1, mu2, sigma2):
  """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

  FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr (S1^1/2 S2 S1^1/2)^1/2, the trace
  term as the nuclear norm of F1 F2^T with eigendecomposition factors (see the
  module docstring). Covariances are symmetrised and their negative round-off
  eigenvalues clamped to zero; the result is clamped to >= 0.

  Args:
    mu1, mu2: (d,) means.
    sigma1, sigma2: (d, d) symmetric positive semi-definite covariances.

  Returns:
    Scalar float32 FD >= 0 (a squared distance, as in FID).
  """
  mu1 = jnp.asarray(mu1, jnp.float32)
  mu2 = jnp.asarray(mu2, jnp.float32)
  sigma1 = jnp.asarray(sigma1, jnp.float32)
  sigma2 = jnp.asarray(sigma2, jnp.float32)
  if mu1.ndim != 1 or mu1.shape[0] < 1:
    raise ValueError(f"mu1 must have shape (d,) with d >= 1, got shape {mu1.shape}.")
  d = mu1.shape[0]
  if mu2.shape != (d,):
    raise ValueError(f"mu2 must have shape {(d,)} like mu1, got shape {mu2.shape}.")
  if sigma1.shape != (d, d):
    raise ValueError(f"sigma1 must have shape {(d, d)} to match mu1, got shape {sigma1.shape}.")
  if sigma2.shape != (d, d):
    raise ValueError(f"sigma2 must have shape {(d, d)} to match mu1, got shape {sigma2.shape}.")
  return _frechet_distance(mu1, sigma1, mu2, sigma2)


@jax.jit
def _frechet_distance(mu1, sigma1, mu2, sigma2):
  trace_sqrt = _trace_sqrt_from_factors(_psd_factor(sigma1), _psd_factor(sigma2))
  fd = (jnp.sum((mu1 - mu2)**2) + jnp.trace(sigma1) + jnp.trace(sigma2) - 2.0 * trace_sqrt)
  return jnp.maximum(fd, 0.0)


def _qr_factor(features):
  """(mu, R, tr S) with R^T R = S the unbiased covariance, from a QR of the centred features."""
  mu = jnp.mean(features, axis=0)
  centred = (features - mu) / jnp.sqrt(features.shape[0] - 1.0)
  r = jnp.linalg.qr(centred, mode="r")
  return mu, r, jnp.sum(centred**2)


def frechet_distance_from_features(features1, features2):
  """Fréchet distance between Gaussians fitted to two feature sets.

  Equals frechet_distance(*gaussian_statistics(features1),
  *gaussian_statistics(features2)) but uses QR factors of the centred features
  (S_i = R_i^T R_i) and never takes a square root of a covariance, so it stays
  accurate for rank-deficient covariances and gives 0 for identical sets.

  Args:
    features1: (n1, d) features, n1 >= 2.
    features2: (n2, d) features, n2 >= 2, same d.

  Returns:
    Scalar float32 FD >= 0.
  """
  features1 = _check_features("features1", features1)
  features2 = _check_features("features2", features2)
  if features2.shape[1] != features1.shape[1]:
    raise ValueError(
        f"features2 must have the same feature dimension as features1: got shapes"
        f" {features1.shape} and {features2.shape}.")
  return _frechet_distance_from_features(features1, features2)


@jax.jit
def _frechet_distance_from_features(features1, features2):
  mu1, r1, trace1 = _qr_factor(features1)
  mu2, r2, trace2 = _qr_factor(features2)
  fd = jnp.sum((mu1 - mu2)**2) + trace1 + trace2 - 2.0 * _trace_sqrt_from_factors(r1, r2)
  return jnp.maximum(fd, 0.0)
