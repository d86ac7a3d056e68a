"""Samplers and logit filters for categorical distributions.

The last axis is always the vocabulary / category axis; leading axes are batch.
Removed entries of a filtered logit vector are set to -inf. All functions are
pure, jittable and vmappable; random ones take ``key`` first. Formulas
(docs/math.md, "Sampling primitives"):

* CDF inversion: k = min{k : cumsum(p)_k >= u}, u ~ U(0, 1) (Devroye 1986).
* Gumbel-max: argmax_k(logits_k + g_k), g = -log(-log u) (Gumbel 1954;
  Maddison et al. 2014) is an exact categorical sample.
* Gumbel-softmax / Concrete: y = softmax((logits + g) / tau) (Jang et al. 2017;
  Maddison et al. 2017); hard = y_hard + (y - stop_gradient(y)), the
  straight-through estimator (Bengio et al. 2013).
* Temperature softmax(logits / T), T = 0 = argmax; top-k (Fan et al. 2018);
  top-p / nucleus (Holtzman et al. 2020).

Checks under ``jit``. The hyper-parameters (k, p, temperature, tau) and
``probs`` raise ``ValueError`` naming the argument when they are concrete
(Python numbers or concrete arrays); they must be scalars even when traced (the
shape is known at trace time). A traced value carries no value to test, so an
invalid one gives an output that cannot pass for a sample, computed with
``jnp.where`` (on the parameter, T or tau -> NaN, or on the output) so valid
outputs are bitwise those of the unchecked formulas:

* float outputs (``apply_temperature``, ``top_k_filter``, ``top_p_filter``,
  ``gumbel_softmax``) are all NaN;
* integer samples are the sentinel -1 (``sample_logits``: every id;
  ``categorical``: the ids of each invalid distribution, i.e. a row with a
  negative or NaN entry or with |sum_k p_k - 1| > 1e-5, the sum taken in float32).

The same conditions are ``checkify.debug_check`` calls: no-ops unless the
caller wraps with ``checkify.checkify(f, errors=checkify.user_checks)`` and
jits (unjitted, checkify runs f on concrete values, which raise); the error
names the function and the argument (docs/library.md, "Checks under jit").
"""
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from research.sampling.continuous import (_as_shape, _concrete, _debug_check,
                                          open_uniform)

_FLOAT = jnp.float32
# Cumulative-mass tolerance of top_p_filter: a token whose preceding mass is
# within this of p counts as "p already reached" (float32 rounding of cumsum).
_TOP_P_ATOL = 1e-6
# Tolerance of the sum-to-one check in categorical (float64 sum when concrete,
# float32 when traced).
_PROBS_ATOL = 1e-5
# Integer sample returned for an invalid traced argument (never a category).
_INVALID_ID = -1


def _check_scalar(value, name, predicate, allowed):
  """Raise ValueError naming ``name`` unless concrete ``value`` satisfies predicate.

  Returns True when ``value`` is traced (a real scalar whose value is unknown);
  the caller then applies ``_traced_valid``.
  """
  if isinstance(value, bool):
    raise ValueError(f"{name} must be {allowed}, got {value!r}")
  concrete = _concrete(value)
  if concrete is None:
    if value.ndim != 0 or not jnp.issubdtype(value.dtype, jnp.number):
      raise ValueError(
          f"{name} must be a real scalar {allowed}, got a traced value of shape "
          f"{value.shape} and dtype {value.dtype}")
    return True
  if concrete.ndim != 0 or not np.issubdtype(concrete.dtype, np.number):
    raise ValueError(f"{name} must be a real scalar {allowed}, got {value!r}")
  if not predicate(float(concrete)):
    raise ValueError(f"{name} must be {allowed}, got {value!r}")
  return False


def _check_int(value, name, minimum):
  """Raise ValueError unless ``value`` is an integer >= minimum.

  Returns True when ``value`` is a traced int scalar (its value unknown).
  """
  is_int = (isinstance(value, (numbers.Integral, np.integer))
            and not isinstance(value, bool))
  if not is_int:
    arr = value if isinstance(value, jax.Array) else None
    if arr is None or arr.ndim != 0 or not jnp.issubdtype(arr.dtype, jnp.integer):
      raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
  concrete = _concrete(value)
  if concrete is None:
    return True
  if int(concrete) < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
  return False


def _traced_valid(checks):
  """AND of the traced checks [(valid, name, allowed, value)], one debug_check each.

  Each check becomes a ``checkify.debug_check`` whose message names the argument
  and shows its value; returns the scalar bool "all valid".
  """
  valid = jnp.asarray(True)
  for ok, name, allowed, value in checks:
    ok = jnp.asarray(ok, jnp.bool_)
    _debug_check(ok, f"{name} must be {allowed}, got {{value}}", value=value)
    valid = valid & ok
  return valid


def _as_logits(logits, name="logits"):
  logits = jnp.asarray(logits, _FLOAT)
  if logits.ndim < 1:
    raise ValueError(
        f"{name} must have a last (vocabulary) axis, got shape {logits.shape}")
  return logits


def _descending_order(logits):
  """Stable descending sort order and its inverse permutation (ranks).

  Ties keep their original index order, so filters decide ties deterministically
  in favour of the lower index.
  """
  order = jnp.argsort(-logits, axis=-1, stable=True)
  ranks = jnp.argsort(order, axis=-1, stable=True)
  return order, ranks


# ----------------------------------------------------------------------------
# Samplers.
# ----------------------------------------------------------------------------
def categorical(key, probs, shape=()):
  """Categorical samples by inverse-CDF search (Devroye 1986, ch. 3.1).

  k = min{k : F_k >= u}, F = cumsum(p) / sum(p) with F_{n-1} set to exactly 1,
  u ~ U(0, 1) open; computed as k = sum_j [F_j < u], clipped to n - 1. A zero
  probability category is never returned.

  Args:
    key: PRNG key.
    probs: (..., n) probabilities, non-negative, summing to 1 over the last axis
      within 1e-5 (ValueError when concrete; traced: the ids drawn from an
      invalid row are -1); leading axes are batch axes.
    shape: sample shape.

  Returns:
    int32 array of shape ``shape + probs.shape[:-1]``.
  """
  shape = _as_shape(shape)
  probs = jnp.asarray(probs, _FLOAT)
  if probs.ndim < 1 or probs.shape[-1] < 1:
    raise ValueError(
        f"categorical: probs must have shape (..., n) with n >= 1, got shape "
        f"{probs.shape}")
  value = _concrete(probs)
  if value is not None:
    if not np.all(value >= 0):
      raise ValueError(
          f"categorical: probs must be non-negative, got probs={value}")
    sums = value.astype(np.float64).sum(-1)
    if not np.all(np.abs(sums - 1.) <= _PROBS_ATOL):
      raise ValueError(
          f"categorical: probs must sum to 1 over the last axis (atol "
          f"{_PROBS_ATOL}), got sums {sums} for probs={value}")
  n = probs.shape[-1]
  cdf = jnp.cumsum(probs, axis=-1)
  total = cdf[..., -1]
  cdf = cdf / cdf[..., -1:]
  cdf = cdf.at[..., -1].set(1.)
  u = open_uniform(key, shape + probs.shape[:-1])
  index = jnp.sum(cdf < u[..., None], axis=-1, dtype=jnp.int32)
  index = jnp.minimum(index, n - 1)
  if value is not None:
    return index
  non_negative = jnp.all(probs >= 0, axis=-1)
  sums_to_one = jnp.abs(total - 1.) <= _PROBS_ATOL
  _debug_check(non_negative, "categorical: probs must be non-negative (no NaN)")
  _debug_check(sums_to_one,
               f"categorical: probs must sum to 1 over the last axis (atol "
               f"{_PROBS_ATOL}), got sums {{sums}}", sums=total)
  return jnp.where(non_negative & sums_to_one, index, _INVALID_ID)


def gumbel_noise(key, shape):
  """Standard Gumbel noise g = -log(-log u), u ~ U(0, 1) open (Gumbel 1954).

  Args:
    key: PRNG key.
    shape: output shape.

  Returns:
    float32 array of ``shape``, finite (u never 0 or 1).
  """
  return -jnp.log(-jnp.log(open_uniform(key, shape)))


def gumbel_max(key, logits):
  """Exact categorical sample by the Gumbel-max trick (Gumbel 1954; Maddison et al. 2014).

  k = argmax_j(logits_j + g_j), g_j = -log(-log u_j) i.i.d., u open in (0, 1);
  P(k) = softmax(logits)_k. -inf logits are never selected (unless all are).

  Args:
    key: PRNG key.
    logits: (..., n) unnormalized log-probabilities.

  Returns:
    int32 array of shape ``logits.shape[:-1]``.
  """
  logits = _as_logits(logits)
  g = gumbel_noise(key, logits.shape)
  return jnp.argmax(logits + g, axis=-1).astype(jnp.int32)


def gumbel_softmax(key, logits, tau=1., hard=False):
  """Gumbel-softmax / Concrete relaxed sample (Jang et al. 2017; Maddison et al. 2017).

  y = softmax((logits + g) / tau), g = -log(-log u). With ``hard=True`` the
  straight-through estimator (Bengio et al. 2013) returns
  y_hard + (y - stop_gradient(y)): exactly one-hot in the forward pass
  (y - stop_gradient(y) is exactly 0), the soft y's gradient in the backward pass.

  Args:
    key: PRNG key.
    logits: (..., n) unnormalized log-probabilities.
    tau: temperature > 0; tau -> 0 approaches one-hot samples (traced
      tau <= 0 or NaN: all NaN).
    hard: Python bool, straight-through one-hot output.

  Returns:
    float32 array of ``logits.shape`` on the probability simplex.
  """
  traced = _check_scalar(tau, "gumbel_softmax: tau", lambda t: t > 0, "> 0")
  if traced:
    # NaN tau makes every output NaN (hard: one_hot + NaN). Replacing the
    # input, not the output, keeps XLA's fusion of the valid path unchanged.
    valid = _traced_valid([(tau > 0, "gumbel_softmax: tau", "> 0", tau)])
    tau = jnp.where(valid, tau, jnp.nan)
  logits = _as_logits(logits)
  g = gumbel_noise(key, logits.shape)
  y = jax.nn.softmax((logits + g) / tau, axis=-1)
  if not hard:
    return y
  y_hard = jax.nn.one_hot(jnp.argmax(y, axis=-1), logits.shape[-1], dtype=y.dtype)
  return y_hard + (y - jax.lax.stop_gradient(y))


# ----------------------------------------------------------------------------
# Logit transforms and filters.
# ----------------------------------------------------------------------------
def apply_temperature(logits, temperature):
  """Scale logits by a temperature: softmax(logits / T) (Ackley et al. 1985).

  T > 0 returns logits / T. T = 0 is the greedy limit: the argmax keeps its
  logit (ties: the lowest index) and every other entry becomes -inf, so the
  softmax is one-hot on the argmax.

  Args:
    logits: (..., n) logits.
    temperature: scalar T >= 0 (Python number, or array; traced T is allowed
      and handled with ``jnp.where``; traced T < 0 or NaN gives all NaN).

  Returns:
    float32 array of ``logits.shape``.
  """
  traced = _check_scalar(temperature, "apply_temperature: temperature",
                         lambda t: t >= 0, ">= 0")
  logits = _as_logits(logits)
  t = jnp.asarray(temperature, _FLOAT)
  if traced:
    # NaN T makes every entry NaN (logits / NaN); the valid path is unchanged.
    valid = _traced_valid(
        [(t >= 0, "apply_temperature: temperature", ">= 0", temperature)])
    t = jnp.where(valid, t, jnp.nan)
  is_greedy = t == 0
  scaled = logits / jnp.where(is_greedy, 1., t)
  best = jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1],
                        dtype=jnp.bool_)
  greedy = jnp.where(best, logits, -jnp.inf)
  return jnp.where(is_greedy, greedy, scaled)


def top_k_filter(logits, k):
  """Keep the k largest logits, set the rest to -inf (top-k; Fan et al. 2018).

  keep_j = rank_j < k, rank = position in the stable descending sort: exactly
  min(k, n) entries stay, ties broken in favour of the lower index. k >= n keeps
  everything.

  Args:
    logits: (..., n) logits, batched over leading axes.
    k: int >= 1 (traced k < 1: all NaN).

  Returns:
    float32 array of ``logits.shape``.
  """
  traced = _check_int(k, "top_k_filter: k (top_k)", 1)
  logits = _as_logits(logits)
  _, ranks = _descending_order(logits)
  out = jnp.where(ranks < k, logits, -jnp.inf)
  if not traced:
    return out
  valid = _traced_valid([(k >= 1, "top_k_filter: k (top_k)", "an int >= 1", k)])
  return jnp.where(valid, out, jnp.nan)


def top_p_filter(logits, p):
  """Nucleus filter: keep the smallest top prefix with mass >= p (Holtzman et al. 2020).

  Sort descending (stable: ties by index), q = softmax(sorted logits),
  mass_before_j = sum_{i<j} q_i; keep sorted token j iff
  mass_before_j < p - 1e-6 (tolerance for float32 cumsum rounding at exactly p),
  always keep the first; map back through the inverse permutation. p = 1 keeps
  every finite logit. -inf logits have q = 0, sort last and stay -inf.

  Example: probs [0.3, 0.3, 0.2, 0.1, 0.1], p = 0.9 -> keeps the first four.

  Args:
    logits: (..., n) logits, batched over leading axes.
    p: scalar in (0, 1] (traced p outside it, or NaN: all NaN).

  Returns:
    float32 array of ``logits.shape``.
  """
  traced = _check_scalar(p, "top_p_filter: p (top_p)", lambda v: 0 < v <= 1,
                         "in (0, 1]")
  logits = _as_logits(logits)
  order, ranks = _descending_order(logits)
  sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
  sorted_probs = jax.nn.softmax(sorted_logits, axis=-1)
  cumulative = jnp.cumsum(sorted_probs, axis=-1)
  mass_before = jnp.concatenate(
      [jnp.zeros_like(cumulative[..., :1]), cumulative[..., :-1]], axis=-1)
  p = jnp.asarray(p, _FLOAT)
  keep_sorted = mass_before < p - _TOP_P_ATOL
  keep_sorted = keep_sorted.at[..., 0].set(True)
  keep = jnp.take_along_axis(keep_sorted, ranks, axis=-1)
  keep = keep | (p >= 1.)
  out = jnp.where(keep, logits, -jnp.inf)
  if not traced:
    return out
  valid = _traced_valid(
      [((p > 0) & (p <= 1), "top_p_filter: p (top_p)", "in (0, 1]", p)])
  return jnp.where(valid, out, jnp.nan)


def sample_logits(key, logits, temperature=1., top_k=None, top_p=None):
  """Sample token ids from logits with temperature, top-k and top-p.

  k ~ Categorical(softmax(top_p(top_k(logits / T)))), drawn by Gumbel-max
  (filters in the order of Holtzman et al. 2020 / common practice: temperature,
  then top-k (Fan et al. 2018), then top-p on the tempered distribution).
  T = 0 is greedy decoding: argmax(logits), deterministic for every key.

  Args:
    key: PRNG key.
    logits: (..., n) logits.
    temperature: T >= 0.
    top_k: None or int >= 1.
    top_p: None or scalar in (0, 1].
    (A traced invalid temperature, top_k or top_p makes every id -1.)

  Returns:
    int32 array of shape ``logits.shape[:-1]``.
  """
  checks = []
  if _check_scalar(temperature, "sample_logits: temperature", lambda t: t >= 0,
                   ">= 0"):
    checks.append((temperature >= 0, "sample_logits: temperature", ">= 0",
                   temperature))
  if top_k is not None and _check_int(top_k, "sample_logits: top_k", 1):
    checks.append((top_k >= 1, "sample_logits: top_k", "an int >= 1", top_k))
  if top_p is not None and _check_scalar(
      top_p, "sample_logits: top_p", lambda v: 0 < v <= 1, "in (0, 1] or None"):
    checks.append(((top_p > 0) & (top_p <= 1), "sample_logits: top_p",
                   "in (0, 1] or None", top_p))
  # The own checks first: under checkify the first failing check is reported.
  valid = _traced_valid(checks) if checks else None
  filtered = apply_temperature(logits, temperature)
  if top_k is not None:
    filtered = top_k_filter(filtered, top_k)
  if top_p is not None:
    filtered = top_p_filter(filtered, top_p)
  ids = gumbel_max(key, filtered)
  if valid is None:
    return ids
  return jnp.where(valid, ids, _INVALID_ID)
