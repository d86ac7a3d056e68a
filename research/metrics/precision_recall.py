"""k-NN precision, recall, density and coverage of a generated feature set.

With real features {r_i} (N of them), fake features {f_j} (M of them) and
NN_k(x, S) the distance from x to its k-th nearest neighbour in S \\ {x}:

  precision = (1/M) sum_j 1[ exists i: |f_j - r_i| < NN_k(r_i, R) ]
  recall    = (1/N) sum_i 1[ exists j: |r_i - f_j| < NN_k(f_j, F) ]
      (improved precision and recall: Kynkäänniemi et al. 2019, "Improved
      Precision and Recall Metric for Assessing Generative Models")
  density   = 1/(k M) sum_j sum_i 1[ |f_j - r_i| < NN_k(r_i, R) ]
  coverage  = (1/N) sum_i 1[ min_j |r_i - f_j| < NN_k(r_i, R) ]
      (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for
      Generative Models")

Precision asks whether fakes land on the real manifold (the union of the real
k-NN balls), recall whether reals land on the fake manifold; density counts how
many real balls hold each fake (about 1 for matching distributions, unbounded
above), and coverage the fraction of real balls that hold at least one fake
(robust to outliers in the fake set). Balls are open (strict <), as in the
reference implementation of Naeem et al., so a set compared with itself has
density 1 when no distances tie.

Distances are computed in row blocks (`batch_size` rows against the whole other
set, |a|^2 + |b|^2 - 2 a.b on squared distances), so memory is O(batch_size *
max(N, M)), and the whole computation is one jittable function (k and
batch_size static).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

__all__ = ["precision_recall_density_coverage", "knn_radii_sq"]

_HIGHEST = jax.lax.Precision.HIGHEST


def _sq_dists(a, b):
  """Squared distances (len(a), len(b)) by the matmul expansion, clamped at 0."""
  sq = (jnp.sum(a**2, axis=-1)[:, None] + jnp.sum(b**2, axis=-1)[None, :]
        - 2.0 * jnp.matmul(a, b.T, precision=_HIGHEST))
  return jnp.maximum(sq, 0.0)


def _row_map(fn, rows, batch_size):
  """fn(row_block (B, d)) -> (B, ...) over all rows, batch_size rows at a time."""
  return jax.lax.map(lambda row: fn(row[None])[0], rows, batch_size=batch_size)


def knn_radii_sq(features, *, k: int, batch_size: int = 1024):
  """Squared distance from each point to its k-th nearest other point in the set.

  NN_k(x_i)^2 = the (k+1)-th smallest of |x_i - x_l|^2 over l (the smallest is
  x_i itself at distance 0).

  Args:
    features: (n, d) points, n > k.
    k: neighbour index, 1 <= k < n.
    batch_size: rows per distance block.

  Returns:
    (n,) float32 squared radii.
  """
  features = jnp.asarray(features, jnp.float32)
  _check_k(k, features.shape[0], "features")
  return _knn_radii_sq(features, k, batch_size)


def _knn_radii_sq(features, k, batch_size):
  def block(rows):
    neg_smallest, _ = jax.lax.top_k(-_sq_dists(rows, features), k + 1)
    return -neg_smallest[:, -1]
  return _row_map(block, features, batch_size)


def _check_k(k, n, name):
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise ValueError(f"k must be a positive integer, got {k!r}.")
  if k >= n:
    raise ValueError(
        f"k must be smaller than the number of points in {name} (a k-NN radius needs"
        f" k other points), got k={k} with {n} points.")


def _check_set(name, x):
  x = jnp.asarray(x, jnp.float32)
  if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
    raise ValueError(f"{name} must have shape (n, d) with n >= 2 and d >= 1, got shape {x.shape}.")
  return x


def precision_recall_density_coverage(real_features, fake_features, *, k: int = 5,
                                      batch_size: int = 1024):
  """Improved precision/recall (Kynkäänniemi 2019) and density/coverage (Naeem 2020).

  See the module docstring for the formulas. Pure and jittable with k and
  batch_size static.

  Args:
    real_features: (N, d) features of real data, N > k.
    fake_features: (M, d) features of generated data, M > k.
    k: nearest-neighbour index for the ball radii (5 in both papers).
    batch_size: rows per block of the pairwise distance computation (memory
      O(batch_size * max(N, M))).

  Returns:
    dict with float32 scalars "precision", "recall", "coverage" in [0, 1] and
    "density" in [0, N/k].
  """
  real = _check_set("real_features", real_features)
  fake = _check_set("fake_features", fake_features)
  if fake.shape[1] != real.shape[1]:
    raise ValueError(
        f"fake_features must have the feature dimension of real_features: got shapes"
        f" {real.shape} and {fake.shape}.")
  _check_k(k, real.shape[0], "real_features")
  _check_k(k, fake.shape[0], "fake_features")
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
  return _prdc(real, fake, k, batch_size)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _prdc(real, fake, k, batch_size):
  real_radii = _knn_radii_sq(real, k, batch_size)
  fake_radii = _knn_radii_sq(fake, k, batch_size)

  def fake_block(rows):                       # per fake: how many real balls hold it
    return jnp.sum(_sq_dists(rows, real) < real_radii[None, :], axis=1)

  def real_block(rows):                       # per real: in a fake ball? nearest fake in own ball?
    sq = _sq_dists(rows, fake)
    in_fake_manifold = jnp.any(sq < fake_radii[None, :], axis=1)
    return jnp.stack([in_fake_manifold, jnp.min(sq, axis=1)], axis=1).astype(jnp.float32)

  counts = _row_map(fake_block, fake, batch_size)
  per_real = _row_map(real_block, real, batch_size)
  return {
      "precision": jnp.mean((counts > 0).astype(jnp.float32)),
      "recall": jnp.mean(per_real[:, 0]),
      "density": jnp.sum(counts).astype(jnp.float32) / (k * fake.shape[0]),
      "coverage": jnp.mean((per_real[:, 1] < real_radii).astype(jnp.float32)),
  }
