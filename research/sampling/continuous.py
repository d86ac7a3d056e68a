"""Samplers for continuous distributions from explicit PRNG keys.

Every function takes ``key`` first, is pure, jittable and vmappable, and returns
float32. Formulas (see docs/math.md, "Sampling primitives"):

* Box-Muller (Box & Muller 1958): z1 = sqrt(-2 ln u1) cos(2 pi u2),
  z2 = sqrt(-2 ln u1) sin(2 pi u2), u1 in (0, 1] so ln u1 is finite.
* Inverse transform (Devroye 1986, ch. 2): x = F^{-1}(u), u ~ U(0, 1) open.
* Multivariate normal: x = mean + L z, cov = L L^T (Cholesky), z ~ N(0, I).

Checks under ``jit``. A concrete invalid argument raises ``ValueError`` naming
it. A traced one (under ``jit``, ``vmap``, ``grad``) carries no value to test,
so the output is NaN where it is invalid instead of a plausible sample: the
invalid parameter entries are replaced by NaN with ``jnp.where`` before the
formula, NaN propagates, and valid outputs are bitwise those of the unchecked
formula. The same condition is a ``checkify.debug_check``: a no-op unless the
caller wraps with ``checkify.checkify(f, errors=checkify.user_checks)`` and
jits (unjitted, checkify runs f on concrete values, which raise), and the
error then names the argument (docs/library.md, "Checks under jit"):

* ``uniform``: low < high elementwise; invalid entries NaN.
* ``normal``: std >= 0 elementwise; invalid entries NaN.
* ``mvn_cholesky``: cov symmetric (|cov - cov^T| <= 1e-5 max|cov|) and its
  Cholesky factor finite with positive diagonal; otherwise every output is NaN.
  (The concrete check is an eigenvalue test in float64, see ``mvn_cholesky``.)
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

_FLOAT = jnp.float32
_TINY = float(jnp.finfo(_FLOAT).tiny)            # smallest positive normal float32
_ONE_MINUS = float(np.nextafter(np.float32(1.0), np.float32(0.0)))  # 1 - 2^-24


# ----------------------------------------------------------------------------
# Small argument helpers (shared by the other modules of this package).
# ----------------------------------------------------------------------------
def _is_tracer(x):
  """True when ``x`` is a JAX tracer (its value is unknown at trace time)."""
  return isinstance(x, jax.core.Tracer)


def _concrete(x):
  """``np.asarray(x)`` when ``x`` holds a concrete value, else ``None``."""
  if _is_tracer(x):
    return None
  return np.asarray(x)


def _debug_check(valid, message, **fmt_args):
  """``checkify.debug_check(all(valid), message)``: reported only under checkify.

  Dropped unless the caller wraps with ``checkify.checkify(..., errors=
  checkify.user_checks)``; ``fmt_args`` (arrays) fill ``{name}`` fields of
  ``message``.
  """
  checkify.debug_check(jnp.all(jnp.asarray(valid, jnp.bool_)), message,
                       **{k: jnp.asarray(v) for k, v in fmt_args.items()})


def _where_valid(valid, x, fill, message, **fmt_args):
  """``jnp.where(valid, x, fill)`` plus ``_debug_check(valid, message)``.

  Where ``valid`` holds the result is ``x`` bit for bit.
  """
  _debug_check(valid, message, **fmt_args)
  return jnp.where(valid, x, fill)


def _as_shape(shape, name="shape"):
  """Normalise an int or a sequence of ints to a tuple; refuse negatives."""
  if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
    shape = (shape,)
  try:
    out = tuple(int(s) for s in shape)
  except TypeError as err:
    raise ValueError(
        f"{name} must be an int or a sequence of ints, got {shape!r}") from err
  if any(s < 0 for s in out):
    raise ValueError(f"{name} must have non-negative sizes, got {shape!r}")
  return out


# ----------------------------------------------------------------------------
# Uniforms.
# ----------------------------------------------------------------------------
def uniform(key, shape, low=0., high=1.):
  """Uniform samples on [low, high).

  x = low + (high - low) u, u ~ U[0, 1) from ``jax.random.uniform``
  (counter-based Threefry bits; Salmon et al. 2011).

  Args:
    key: PRNG key.
    shape: output shape (int or tuple).
    low, high: bounds, scalars or arrays broadcastable to ``shape``; low < high
      (ValueError when both are concrete; traced: NaN where low >= high).

  Returns:
    float32 array of ``shape``.
  """
  shape = _as_shape(shape)
  lo, hi = _concrete(low), _concrete(high)
  if lo is not None and hi is not None:
    if not np.all(lo < hi):
      raise ValueError(
          f"uniform: need low < high, got low={low!r}, high={high!r}")
    return jax.random.uniform(key, shape, _FLOAT, minval=low, maxval=high)
  low, high = jnp.asarray(low, _FLOAT), jnp.asarray(high, _FLOAT)
  # A NaN bound makes the sample NaN; the valid path is the unchecked formula.
  low = _where_valid(low < high, low, jnp.nan,
                     "uniform: need low < high (arguments low, high)")
  return jax.random.uniform(key, shape, _FLOAT, minval=low, maxval=high)


def open_uniform(key, shape):
  """Uniform samples on the open interval (0, 1), safe for log(u) and log(1 - u).

  u = clip(U[tiny, 1), tiny, 1 - 2^-24), tiny = smallest normal float32, so
  ``-log(u)`` <= 87.4 and ``-log(1 - u)`` <= 16.7 are always finite
  (the guard every inverse-CDF sampler needs; Devroye 1986, ch. 2).

  Args:
    key: PRNG key.
    shape: output shape.

  Returns:
    float32 array of ``shape`` with 0 < u < 1.
  """
  shape = _as_shape(shape)
  u = jax.random.uniform(key, shape, _FLOAT, minval=_TINY, maxval=1.)
  return jnp.clip(u, _TINY, _ONE_MINUS)


# ----------------------------------------------------------------------------
# Normals.
# ----------------------------------------------------------------------------
def normal(key, shape, mean=0., std=1.):
  """Gaussian samples N(mean, std^2).

  x = mean + std z, z ~ N(0, 1) from ``jax.random.normal`` (inverse-erf method).

  Args:
    key: PRNG key.
    shape: output shape.
    mean, std: scalars or arrays broadcastable to ``shape``; std >= 0
      (ValueError when concrete; traced: NaN where std < 0 or NaN).

  Returns:
    float32 array of ``shape``.
  """
  shape = _as_shape(shape)
  s = _concrete(std)
  if s is not None and not np.all(s >= 0):
    raise ValueError(f"normal: std must be >= 0, got std={std!r}")
  std = jnp.asarray(std, _FLOAT)
  if s is None:
    std = _where_valid(std >= 0, std, jnp.nan, "normal: std must be >= 0")
  z = jax.random.normal(key, shape, _FLOAT)
  return jnp.asarray(mean, _FLOAT) + std * z


def box_muller_transform(u1, u2):
  """Map two uniforms to two independent standard normals (Box & Muller 1958).

  z1 = sqrt(-2 ln u1) cos(2 pi u2),  z2 = sqrt(-2 ln u1) sin(2 pi u2),
  with u1 in (0, 1] and u2 in [0, 1). u1 is clipped to [tiny, 1] first, so
  u1 = 0 gives a large finite radius (sqrt(-2 ln tiny) ~ 13.2), never inf/NaN.

  Args:
    u1, u2: float arrays of the same (broadcastable) shape.

  Returns:
    (z1, z2): two float32 arrays of the broadcast shape.
  """
  u1 = jnp.clip(jnp.asarray(u1, _FLOAT), _TINY, 1.)
  u2 = jnp.asarray(u2, _FLOAT)
  radius = jnp.sqrt(-2. * jnp.log(u1))
  theta = 2. * jnp.pi * u2
  return radius * jnp.cos(theta), radius * jnp.sin(theta)


def box_muller(key, shape):
  """Standard normal samples by the Box-Muller transform (Box & Muller 1958).

  Draws m = ceil(n / 2) pairs (u1, u2) with u1 = 1 - U[0, 1) in (0, 1] and
  u2 ~ U[0, 1), maps them with ``box_muller_transform`` and uses both the cosine
  and the sine outputs: the first n of the 2m normals, reshaped to ``shape``
  (so odd sizes work).

  Args:
    key: PRNG key.
    shape: output shape.

  Returns:
    float32 array of ``shape`` distributed N(0, 1) elementwise, i.i.d.
  """
  shape = _as_shape(shape)
  n = math.prod(shape)
  num_pairs = (n + 1) // 2
  key_radius, key_angle = jax.random.split(key)
  u1 = 1. - jax.random.uniform(key_radius, (num_pairs,), _FLOAT)
  u2 = jax.random.uniform(key_angle, (num_pairs,), _FLOAT)
  z1, z2 = box_muller_transform(u1, u2)
  return jnp.concatenate([z1, z2])[:n].reshape(shape)


# ----------------------------------------------------------------------------
# Inverse transform and multivariate normal.
# ----------------------------------------------------------------------------
def inverse_transform(key, icdf, shape):
  """Samples by inverse-transform sampling (Devroye 1986, ch. 2).

  x = F^{-1}(u), u ~ U(0, 1) on the open interval (``open_uniform``), so an
  icdf such as -log(1 - u) (exponential) or log(u / (1 - u)) stays finite.

  Args:
    key: PRNG key.
    icdf: elementwise callable u -> F^{-1}(u) (jnp ops, so it is traceable).
    shape: shape of u.

  Returns:
    ``icdf(u)``.
  """
  if not callable(icdf):
    raise ValueError(f"inverse_transform: icdf must be callable, got {icdf!r}")
  return icdf(open_uniform(key, shape))


def mvn_cholesky(key, mean, cov, shape=()):
  """Multivariate normal samples N(mean, cov) via the Cholesky factor.

  x = mean + L z, cov = L L^T (lower-triangular Cholesky), z ~ N(0, I)
  (e.g. Gentle 2003, "Random Number Generation and Monte Carlo Methods", 5.3.1).

  Args:
    key: PRNG key.
    mean: (..., d) mean; leading axes (if any) broadcast with one shared cov.
    cov: (d, d) symmetric positive-definite covariance.
    shape: sample shape prepended to the output.

  Returns:
    float32 array of shape ``shape + mean.shape``.

  Raises:
    ValueError: mean is a scalar, cov is not (d, d) with d = mean.shape[-1], or
      (when cov is concrete) cov is not symmetric or not positive definite:
      min eigenvalue (float64 ``eigvalsh``) <= d * eps_float32 * max |eigenvalue|
      (this also refuses singular, merely semi-definite covariances).

  A traced cov is not raised on: the output is all NaN unless cov is
  symmetric (|cov - cov^T| <= 1e-5 max |cov|) and its float32 Cholesky factor
  is finite with a positive diagonal (the factorisation fails on matrices that
  are not positive definite); the same condition is a ``checkify.debug_check``.
  """
  shape = _as_shape(shape)
  mean = jnp.asarray(mean, _FLOAT)
  cov = jnp.asarray(cov, _FLOAT)
  if mean.ndim < 1:
    raise ValueError(
        f"mvn_cholesky: mean must have at least one axis (..., d), got shape "
        f"{mean.shape}")
  d = mean.shape[-1]
  if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
    raise ValueError(
        f"mvn_cholesky: cov must be a square (d, d) matrix, got shape {cov.shape}")
  if cov.shape[0] != d:
    raise ValueError(
        f"mvn_cholesky: cov shape {cov.shape} does not match mean shape "
        f"{mean.shape}: need cov of shape ({d}, {d})")
  chol = jnp.linalg.cholesky(cov)
  cov_value = _concrete(cov)
  if cov_value is not None:
    cov64 = cov_value.astype(np.float64)
    if not np.all(np.isfinite(cov64)):
      raise ValueError(f"mvn_cholesky: cov must be finite, got cov={cov_value}")
    scale = max(float(np.max(np.abs(cov64))), _TINY)
    if not np.allclose(cov64, cov64.T, rtol=0., atol=1e-5 * scale):
      raise ValueError(f"mvn_cholesky: cov must be symmetric, got cov={cov_value}")
    eig = np.linalg.eigvalsh(cov64)
    threshold = d * float(jnp.finfo(_FLOAT).eps) * float(np.max(np.abs(eig)))
    if not np.all(np.isfinite(eig)) or eig[0] <= threshold:
      raise ValueError(
          f"mvn_cholesky: cov must be positive definite, got eigenvalues "
          f"{eig} of cov={cov_value}; allowed: symmetric with all eigenvalues "
          f"> {threshold:.3g}")
  else:
    scale = jnp.maximum(jnp.max(jnp.abs(cov)), _TINY)
    symmetric = jnp.all(jnp.abs(cov - cov.T) <= 1e-5 * scale)
    factored = jnp.all(jnp.isfinite(chol)) & jnp.all(jnp.diagonal(chol) > 0)
    chol = _where_valid(symmetric & factored, chol, jnp.nan,
                        "mvn_cholesky: cov must be symmetric positive definite")
  z = jax.random.normal(key, shape + mean.shape, _FLOAT)
  return mean + jnp.einsum("...j,ij->...i", z, chol)
