"""Uniform dequantization of discrete data and the bits per dimension of a density on it.

Integer data x in {0, ..., L - 1}^D (L = num_levels grey levels) are spread over their
bins (Uria et al. 2013; Theis et al. 2016, "A note on the evaluation of generative
models", Sec. 3.1):

    y = (x + u) / L,    u ~ U(0, 1)^D,        a point of [0, 1)^D.

A density p on [0, 1]^D defines the discrete model P(x) = int_{bin(x)} p(y) dy over the
bin [x / L, (x + 1) / L)^D of volume L^-D, so P(x) = L^-D E_u[p((x + u) / L)] and, by
Jensen's inequality (log is concave),

    -log P(x) <= E_u[-log p((x + u) / L)] + D log L.

The right-hand side in bits per dimension,

    bits/dim = (E_u[-log p(y)] + D log L) / (D ln 2),

is `dequantized_bits_per_dim`: an upper bound on the NLL of the discrete model P
(estimated with one u per image; Ho et al. 2019, Flow++, Sec. 3.1).

A model that works on y' = a y + b instead (images in [-1, 1]: y' = 2 y - 1, a = 2)
gives p_y(y) = p_y'(y') |a|^D, so -log p_y(y) = -log p_y'(y') - D log |a|:
`log_jacobian` = log |det dy'/dy| = D log |a| (D log 2 for [-1, 1]) is subtracted from
the model-space NLL.

Everything here is a pure function; `dequantize` is jittable (its value checks run only
on concrete input).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["dequantize", "dequantized_bits_per_dim", "mean_and_stderr"]


def _check_levels(num_levels) -> int:
  if isinstance(num_levels, bool) or not isinstance(num_levels, (int, np.integer)) \
      or num_levels < 2:
    raise ValueError(f"num_levels must be an integer >= 2, got num_levels={num_levels!r}")
  return int(num_levels)


def dequantize(key: jax.Array, x_int, num_levels: int) -> jax.Array:
  """y = (x + u) / L with u ~ U(0, 1) per element: integer levels -> [0, 1) (float32).

  x_int: integers in {0, ..., L - 1} of shape (batch, ...), an integer or float dtype
  holding whole numbers. Raises ValueError naming x when concrete values are not
  integers in that range (under jit the values cannot be checked and pass through).
  Example b's noise comes from fold_in(key, b), so it does not depend on the batch size
  (dequantize(key, x)[:n] == dequantize(key, x[:n])).
  """
  levels = _check_levels(num_levels)
  x = jnp.asarray(x_int)
  if x.ndim < 1:
    raise ValueError(f"x must have a batch axis, shape (batch, ...), got shape {x.shape}")
  if not isinstance(x, jax.core.Tracer):
    values = np.asarray(x)
    if values.dtype == bool or not np.issubdtype(values.dtype, np.number):
      raise ValueError(f"x must hold integers in [0, {levels - 1}], got dtype {values.dtype}")
    if values.size and not (np.all(values == np.round(values)) and values.min() >= 0
                            and values.max() <= levels - 1):
      bad = values[(values != np.round(values)) | (values < 0) | (values > levels - 1)]
      raise ValueError(f"x must hold integers in [0, {levels - 1}] (num_levels={levels}), "
                       f"got values such as {bad.ravel()[:3].tolist()}")
  u = jax.vmap(lambda b: jax.random.uniform(jax.random.fold_in(key, b), x.shape[1:],
                                             jnp.float32))(jnp.arange(x.shape[0]))
  return (x.astype(jnp.float32) + u) / levels


def dequantized_bits_per_dim(nll_nats, num_dims: int, num_levels: int, log_jacobian=0.0):
  """(nll - log_jacobian + D log L) / (D ln 2): bits/dim of discrete data from a density.

  nll_nats: -log p of dequantized points in nats (any shape: per image or a mean), of
  the density in model space; num_dims: D; num_levels: L; log_jacobian: log |det dy'/dy|
  of the map from the unit-range y to the model's y' (0 for [0, 1], D log 2 for
  [-1, 1]). Module docstring: an upper bound on the discrete NLL (Jensen). Numpy float64
  for concrete input, jax arrays under tracing.
  """
  if isinstance(num_dims, bool) or not isinstance(num_dims, (int, np.integer)) or num_dims < 1:
    raise ValueError(f"num_dims must be an integer >= 1, got num_dims={num_dims!r}")
  levels = _check_levels(num_levels)
  xp = jnp if isinstance(nll_nats, jax.core.Tracer) else np
  nll = xp.asarray(nll_nats, dtype=jnp.float32 if xp is jnp else np.float64)
  return (nll - log_jacobian + num_dims * math.log(levels)) / (num_dims * math.log(2.0))


def mean_and_stderr(values) -> tuple[float, float]:
  """(mean, std / sqrt(n)) of n >= 2 independent per-example values (std with n - 1).

  The standard error of the mean over examples, as research.autoregressive.likelihood's
  nll_summary gives for equal-length examples.
  """
  v = np.asarray(values, np.float64).reshape(-1)
  if v.size < 2:
    raise ValueError(f"values needs n >= 2 examples for a standard error, got {v.size}")
  if not np.all(np.isfinite(v)):
    raise ValueError(f"values must be finite, got {int(np.sum(~np.isfinite(v)))} non-finite")
  return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))
