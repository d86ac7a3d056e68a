"""Monte Carlo estimates and gradient estimators for E_q[f(z)].

* Plain Monte Carlo (Metropolis & Ulam 1949): E[f(x)] ~ (1/n) sum_i f(x_i),
  standard error = std_{ddof=1}(f(x_i)) / sqrt(n).
* For q = N(mu, diag exp(log_var)) and the objective L = E_q[f(z)], two
  unbiased per-sample gradient estimators (survey: Mohamed et al. 2020,
  "Monte Carlo Gradient Estimation in Machine Learning"):
  - pathwise / reparameterization (Kingma & Welling 2014), z = mu + sigma eps:
      g_mu = f'(z),  g_log_var = f'(z) * 0.5 sigma eps;
  - score function / REINFORCE (Williams 1992), with a baseline b:
      g_mu = (f(z) - b) (z - mu) / sigma^2 = (f(z) - b) eps / sigma,
      g_log_var = (f(z) - b) * 0.5 (eps^2 - 1).

Convention for ``f`` throughout this module: f is applied **batch-wise** to the
whole batch of samples z of shape (n,) + event_shape and returns values of shape
(n,) (or (n, ...) for ``mc_estimate``); row i must depend on sample i only.

Gradient estimators return the n per-sample terms, ``GaussianGradient(mu=...,
log_var=...)`` with arrays of shape (n,) + mu.shape; their mean over axis 0 is the
estimate and their variance over axis 0 is the per-sample variance, so the
variance of the n-sample estimate of i.i.d. terms is var / n. For a figure of
estimator variance vs n (also valid for the leave-one-out baseline, whose terms
are not independent), use ``gradient_variance``, which repeats the n-sample
estimate over independent keys.

Checks under ``jit``: every check in this module is static (``n`` and
``num_repeats`` must be Python ints, so a traced one raises ``ValueError``;
shapes and the ``baseline`` kind are known at trace time). No argument has a
value condition that a tracer could hide: ``mu``, ``log_var`` and a constant
``baseline`` take any real value (docs/library.md, "Checks under jit").
"""
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


_FLOAT = jnp.float32


class GaussianGradient(NamedTuple):
  """Gradient (or per-sample gradient terms) w.r.t. (mu, log_var) of a Gaussian."""
  mu: jax.Array
  log_var: jax.Array


def _check_n(n, name):
  if (not isinstance(n, (numbers.Integral, np.integer)) or isinstance(n, bool)
      or n < 1):
    raise ValueError(f"{name}: n must be a Python int >= 1 (static sample count), "
                     f"got n={n!r}")
  return int(n)


def _check_leading(values, n, name, what):
  if values.ndim < 1 or values.shape[0] != n:
    raise ValueError(
        f"{name}: {what} must have leading axis n={n}, got shape {values.shape}")


def mc_estimate(key, f, sampler, n):
  """Monte Carlo estimate of E[f(x)] with its standard error (Metropolis & Ulam 1949).

  x_i = sampler(key, n)[i], mean = (1/n) sum_i f(x)_i,
  standard_error = std_{ddof=1}(f(x)) / sqrt(n) (NaN for n = 1: undefined).

  Args:
    key: PRNG key.
    f: batch-wise callable, samples (n, ...) -> values (n,) or (n, ...).
    sampler: callable (key, n) -> samples with leading axis n.
    n: Python int >= 1.

  Returns:
    (mean, standard_error), each of shape values.shape[1:], float32.

  Raises:
    ValueError: n < 1 or not an int, or samples / values without leading axis n.
  """
  n = _check_n(n, "mc_estimate")
  samples = sampler(key, n)
  for leaf in jax.tree_util.tree_leaves(samples):
    _check_leading(jnp.asarray(leaf), n, "mc_estimate", "sampler(key, n)")
  values = jnp.asarray(f(samples), _FLOAT)
  _check_leading(values, n, "mc_estimate", "f(samples)")
  mean = jnp.mean(values, axis=0)
  standard_error = jnp.std(values, axis=0, ddof=1) / jnp.sqrt(jnp.asarray(n, _FLOAT))
  return mean, standard_error


def _gaussian_inputs(name, mu, log_var, n):
  n = _check_n(n, name)
  mu = jnp.asarray(mu, _FLOAT)
  log_var = jnp.asarray(log_var, _FLOAT)
  if mu.shape != log_var.shape:
    raise ValueError(
        f"{name}: mu and log_var must have the same shape, got mu shape "
        f"{mu.shape} and log_var shape {log_var.shape}")
  return mu, log_var, n


def _f_values(f, z, n, name):
  values = jnp.asarray(f(z), _FLOAT)
  if values.shape != (n,):
    raise ValueError(
        f"{name}: f must map samples of shape {z.shape} to values of shape "
        f"({n},), got shape {values.shape}")
  return values


def reparam_gradient(key, f, mu, log_var, n):
  """Per-sample pathwise (reparameterization) gradient of E_{N(mu, exp(log_var))}[f(z)].

  z_i = mu + sigma eps_i, sigma = exp(0.5 log_var), eps_i ~ N(0, I);
  g_mu_i = df/dz(z_i), g_log_var_i = df/dz(z_i) * 0.5 sigma eps_i
  (Kingma & Welling 2014; Mohamed et al. 2020, sec. 5). Unbiased for
  differentiable f; f'(z_i) comes from one ``jax.grad`` of sum_i f(z)_i.

  Args:
    key: PRNG key.
    f: batch-wise differentiable callable, z (n,) + mu.shape -> (n,).
    mu, log_var: parameters of the diagonal Gaussian, same shape.
    n: Python int >= 1, number of samples.

  Returns:
    GaussianGradient of per-sample terms, each (n,) + mu.shape; ``.mean(0)`` of
    each field is the gradient estimate.
  """
  mu, log_var, n = _gaussian_inputs("reparam_gradient", mu, log_var, n)
  sigma = jnp.exp(0.5 * log_var)
  eps = jax.random.normal(key, (n,) + mu.shape, _FLOAT)
  z = mu + sigma * eps
  _f_values(f, z, n, "reparam_gradient")
  df_dz = jax.grad(lambda zz: jnp.sum(f(zz)))(z)
  return GaussianGradient(mu=df_dz, log_var=df_dz * 0.5 * sigma * eps)


def score_function_gradient(key, f, mu, log_var, n, baseline=None):
  """Per-sample score-function (REINFORCE) gradient of E_{N(mu, exp(log_var))}[f(z)].

  g_mu_i = (f(z_i) - b_i) eps_i / sigma, g_log_var_i = (f(z_i) - b_i) 0.5 (eps_i^2 - 1),
  the grad of log q(z_i) times f minus a baseline (Williams 1992). f need not be
  differentiable. Baselines keep the estimate unbiased: a constant b, or the
  leave-one-out mean b_i = (sum_j f_j - f_i) / (n - 1) (Kool et al. 2019).

  Args:
    key: PRNG key.
    f: batch-wise callable, z (n,) + mu.shape -> (n,).
    mu, log_var: parameters of the diagonal Gaussian, same shape.
    n: Python int >= 1 (>= 2 for ``"leave_one_out"``).
    baseline: None (b = 0), a scalar constant, or ``"leave_one_out"``.

  Returns:
    GaussianGradient of per-sample terms, each (n,) + mu.shape.
  """
  mu, log_var, n = _gaussian_inputs("score_function_gradient", mu, log_var, n)
  sigma = jnp.exp(0.5 * log_var)
  eps = jax.random.normal(key, (n,) + mu.shape, _FLOAT)
  z = mu + sigma * eps
  values = jax.lax.stop_gradient(_f_values(f, z, n, "score_function_gradient"))
  if baseline is None:
    b = jnp.zeros((), _FLOAT)
  elif isinstance(baseline, str):
    if baseline != "leave_one_out":
      raise ValueError(
          f"score_function_gradient: baseline must be None, a number or "
          f"'leave_one_out', got baseline={baseline!r}")
    if n < 2:
      raise ValueError(
          f"score_function_gradient: baseline='leave_one_out' needs n >= 2, "
          f"got n={n}")
    b = (jnp.sum(values) - values) / (n - 1)
  else:
    b = jnp.asarray(baseline, _FLOAT)
    if b.ndim != 0:
      raise ValueError(
          f"score_function_gradient: a constant baseline must be a scalar, got "
          f"shape {b.shape}")
  weight = (values - b).reshape((n,) + (1,) * mu.ndim)
  return GaussianGradient(mu=weight * eps / sigma,
                          log_var=weight * 0.5 * (jnp.square(eps) - 1.))


def gradient_variance(key, estimator, f, mu, log_var, n, num_repeats=100):
  """Mean and variance of an n-sample gradient estimate over independent repeats.

  For r = 1..R with independent keys, G_r = mean_i estimator(key_r, f, mu,
  log_var, n)_i; returns (mean_r G_r, var_{ddof=1, r} G_r). Var[G] is the
  quantity to plot against n (~ per-sample variance / n for i.i.d. terms;
  Mohamed et al. 2020, sec. 3).

  Args:
    key: PRNG key.
    estimator: ``reparam_gradient`` or ``score_function_gradient`` (use
      ``functools.partial(score_function_gradient, baseline=...)`` for baselines)
      or any callable with the signature (key, f, mu, log_var, n).
    f, mu, log_var, n: as for the estimator.
    num_repeats: Python int >= 2, number of independent n-sample estimates.

  Returns:
    (mean, variance): two GaussianGradient, fields of shape mu.shape.
  """
  n = _check_n(n, "gradient_variance")
  if (not isinstance(num_repeats, (numbers.Integral, np.integer))
      or isinstance(num_repeats, bool) or num_repeats < 2):
    raise ValueError(
        f"gradient_variance: num_repeats must be an int >= 2, got "
        f"num_repeats={num_repeats!r}")

  def one_estimate(k):
    terms = estimator(k, f, mu, log_var, n)
    return jax.tree_util.tree_map(lambda t: jnp.mean(t, axis=0), terms)

  estimates = jax.vmap(one_estimate)(jax.random.split(key, int(num_repeats)))
  mean = jax.tree_util.tree_map(lambda e: jnp.mean(e, axis=0), estimates)
  variance = jax.tree_util.tree_map(lambda e: jnp.var(e, axis=0, ddof=1), estimates)
  return mean, variance
