"""Distances between point sets for sample quality: W2, sliced W2, MMD, energy.

All take samples as float32 arrays of shape (n, d) (rows are points), are pure
JAX and jittable (integer options static), and need no pretrained weights, so
they work offline on toy and low-dimensional data.

  * `wasserstein2`       exact W2 between equal-size sets (optimal assignment).
                         Cost: the Hungarian algorithm is O(n^3) (timings in
                         docs/library.md); it matches scipy's
                         linear_sum_assignment to 1e-6. Prefer
                         `sliced_wasserstein`, `mmd` or `energy_distance` for
                         larger sets.
  * `sliced_wasserstein` Monte Carlo sliced W2 over random directions.
  * `mmd`                squared MMD with a sum of RBF kernels (biased V- or
                         unbiased U-statistic).
  * `energy_distance`    squared energy distance (V-statistic).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["wasserstein2", "sliced_wasserstein", "mmd", "energy_distance",
           "DEFAULT_BANDWIDTHS"]

DEFAULT_BANDWIDTHS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def _check_points(x, y, *, same_size: bool):
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
    raise ValueError(f"x must have shape (n, d) with n, d >= 1, got shape {x.shape}.")
  if y.ndim != 2 or y.shape[0] < 1 or y.shape[1] < 1:
    raise ValueError(f"y must have shape (m, d) with m, d >= 1, got shape {y.shape}.")
  if y.shape[1] != x.shape[1]:
    raise ValueError(
        f"y must have the same dimension d as x: x has shape {x.shape}, y has"
        f" shape {y.shape}.")
  if same_size and y.shape[0] != x.shape[0]:
    raise ValueError(
        f"y must have as many points as x (an exact assignment needs equal"
        f" sizes): x has shape {x.shape}, y has shape {y.shape}.")
  return x, y


def _sq_dists(x, y):
  """Pairwise squared distances ||x_i - y_j||^2, shape (n, m), no cancellation."""
  return jnp.sum((x[:, None, :] - y[None, :, :])**2, axis=-1)


def _safe_norm_from_sq(sq):
  """sqrt(sq) with a zero (not NaN) gradient at sq = 0."""
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def wasserstein2(x, y):
  """Exact 2-Wasserstein distance between two equal-size empirical measures.

  W2(x, y) = sqrt(min_pi (1/n) sum_i ||x_i - y_pi(i)||^2) over permutations pi:
  for uniform weights on n points each, the optimal transport plan is a
  permutation (Birkhoff-von Neumann; Peyre & Cuturi 2019, "Computational Optimal
  Transport", Prop. 2.1), found here with the Hungarian algorithm (Kuhn 1955;
  `optax.assignment.hungarian_algorithm`) on the squared-distance cost. The
  matched squared distances are recomputed from the points, so the value is
  exact up to float32 rounding. O(n^3): see the module docstring for timings.

  Args:
    x: (n, d) points.
    y: (n, d) points (same n and d as x).

  Returns:
    Scalar float32 W2 >= 0.
  """
  x, y = _check_points(x, y, same_size=True)
  cost = _sq_dists(x, y)
  rows, cols = optax.assignment.hungarian_algorithm(cost)
  matched = jnp.sum((x[rows] - y[cols])**2, axis=-1)
  return jnp.sqrt(jnp.mean(matched))


def _quantile_grid(n: int, m: int):
  """Static pieces for the exact 1-D W between n and m uniform atoms.

  The quantile functions of the two sorted sets are piecewise constant with
  breaks at i / n and j / m. On each piece of the merged grid (length l_p,
  midpoint u_p) they take the values x_(floor(u_p n)) and y_(floor(u_p m)).
  """
  breaks = np.unique(np.concatenate([np.arange(1, n + 1) / n,
                                     np.arange(1, m + 1) / m]))
  lengths = np.diff(np.concatenate([[0.0], breaks]))
  mids = breaks - lengths / 2
  ix = np.minimum(np.floor(mids * n).astype(np.int32), n - 1)
  iy = np.minimum(np.floor(mids * m).astype(np.int32), m - 1)
  return ix, iy, lengths.astype(np.float32)


def sliced_wasserstein(key, x, y, num_projections: int = 128):
  """Sliced 2-Wasserstein distance by Monte Carlo over random directions.

  SW2(x, y) = sqrt(E_theta W2^2(<theta, x>, <theta, y>)), theta uniform on the
  unit sphere S^{d-1} (Rabin et al. 2011; Bonneel et al. 2015), estimated with
  `num_projections` directions. Each 1-D W2^2 is exact: for equal sizes the mean
  squared difference of the sorted projections; for n != m the integral
  int_0^1 |F^-1(u) - G^-1(u)|^2 du of the two piecewise-constant quantile
  functions. In d = 1 every direction is +-1, so SW2 equals the exact W2.

  Args:
    key: PRNG key for the directions.
    x: (n, d) points.
    y: (m, d) points.
    num_projections: number of random directions, a Python int >= 1 (static).

  Returns:
    Scalar float32 SW2 >= 0.
  """
  x, y = _check_points(x, y, same_size=False)
  if isinstance(num_projections, bool) or not isinstance(
      num_projections, (int, np.integer)) or num_projections < 1:
    raise ValueError(
        f"num_projections must be a Python int >= 1, got {num_projections!r}.")
  d = x.shape[1]
  theta = jax.random.normal(key, (int(num_projections), d), jnp.float32)
  theta = theta / jnp.linalg.norm(theta, axis=-1, keepdims=True)
  px = jnp.sort(x @ theta.T, axis=0)      # (n, P)
  py = jnp.sort(y @ theta.T, axis=0)      # (m, P)
  n, m = x.shape[0], y.shape[0]
  if n == m:
    w2_sq = jnp.mean((px - py)**2, axis=0)
  else:
    ix, iy, lengths = _quantile_grid(n, m)
    w2_sq = jnp.sum(lengths[:, None] * (px[ix] - py[iy])**2, axis=0)
  return jnp.sqrt(jnp.mean(w2_sq))


def _check_bandwidths(bandwidths):
  bw = jnp.asarray(bandwidths, jnp.float32)
  if bw.ndim != 1 or bw.shape[0] < 1:
    raise ValueError(
        f"bandwidths must be a non-empty 1-D sequence, got shape {bw.shape}.")
  if not isinstance(bw, jax.core.Tracer):
    b = np.asarray(bw)
    if not np.all(np.isfinite(b)) or np.any(b <= 0):
      raise ValueError(f"bandwidths must be finite and > 0, got {b}.")
  return bw


def _rbf_sum(sq, bw):
  """k(a, b) = sum_h exp(-||a - b||^2 / (2 h^2)) from squared distances."""
  return jnp.sum(jnp.exp(-sq[..., None] / (2 * bw**2)), axis=-1)


def mmd(x, y, bandwidths=DEFAULT_BANDWIDTHS, unbiased: bool = False):
  """Squared maximum mean discrepancy with a sum of RBF kernels.

  k(a, b) = sum_h exp(-||a - b||^2 / (2 h^2)) over `bandwidths` h (a
  multi-scale kernel, Li et al. 2015 / Binkowski et al. 2018), and
  MMD^2 = E k(X, X') + E k(Y, Y') - 2 E k(X, Y) (Gretton et al. 2012, JMLR).

  unbiased=False (default): the biased V-statistic, means over all pairs
    including i = j; always >= 0 and exactly 0 for identical sets.
  unbiased=True: the U-statistic, off-diagonal means for the XX and YY terms;
    unbiased for MMD^2 but can be slightly negative; needs n, m >= 2.

  Args:
    x: (n, d) points.
    y: (m, d) points.
    bandwidths: positive kernel widths h (a tuple, or an array under jit).
    unbiased: which estimator (a Python bool).

  Returns:
    Scalar float32 estimate of MMD^2 (not its square root).
  """
  x, y = _check_points(x, y, same_size=False)
  bw = _check_bandwidths(bandwidths)
  n, m = x.shape[0], y.shape[0]
  kxx = _rbf_sum(_sq_dists(x, x), bw)
  kyy = _rbf_sum(_sq_dists(y, y), bw)
  kxy = _rbf_sum(_sq_dists(x, y), bw)
  if unbiased:
    if n < 2 or m < 2:
      raise ValueError(
          f"unbiased MMD needs at least 2 points in x and y, got x shape"
          f" {x.shape}, y shape {y.shape}.")
    # Drop the diagonal k(a, a) terms.
    exx = (jnp.sum(kxx) - jnp.trace(kxx)) / (n * (n - 1))
    eyy = (jnp.sum(kyy) - jnp.trace(kyy)) / (m * (m - 1))
    return exx + eyy - 2 * jnp.mean(kxy)
  return jnp.maximum(jnp.mean(kxx) + jnp.mean(kyy) - 2 * jnp.mean(kxy), 0.0)


def energy_distance(x, y):
  """Squared energy distance between two empirical distributions.

  D^2(X, Y) = 2 E||X - Y|| - E||X - X'|| - E||Y - Y'|| (Szekely & Rizzo 2013,
  "Energy statistics"), V-statistic with means over all pairs (i = j included),
  so it is >= 0 and 0 for identical sets. It is the square of what
  `scipy.stats.energy_distance` returns (which is sqrt(D^2)) and equals MMD^2
  with the distance-induced kernel (Sejdinovic et al. 2013). Gradients are
  finite at coincident points.

  Args:
    x: (n, d) points.
    y: (m, d) points.

  Returns:
    Scalar float32 D^2 >= 0.
  """
  x, y = _check_points(x, y, same_size=False)
  dxy = jnp.mean(_safe_norm_from_sq(_sq_dists(x, y)))
  dxx = jnp.mean(_safe_norm_from_sq(_sq_dists(x, x)))
  dyy = jnp.mean(_safe_norm_from_sq(_sq_dists(y, y)))
  return jnp.maximum(2 * dxy - dxx - dyy, 0.0)
