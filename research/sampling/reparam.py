"""Reparameterized samplers: samples as differentiable functions of parameters.

A reparameterized sample is z = g(params, eps) with parameter-free noise eps, so
d z / d params exists and pathwise gradients of E[f(z)] flow through the sample
(Kingma & Welling 2014; Rezende et al. 2014). ``rsample_*`` keep the gradient;
``sample_normal`` returns the same value under ``stop_gradient``.

All noise comes from ``key`` (first argument); uniforms are drawn on the open
interval (0, 1) so no formula takes log(0). Parameters broadcast against each
other; the output has their broadcast shape, float32.

Checks under ``jit``: a concrete ``scale`` / ``rate`` that is not > 0 everywhere
raises ``ValueError`` naming it. A traced one gives NaN in the entries where it
is not > 0 (or is NaN): ``jnp.where`` replaces those parameter entries by NaN
before the formula, so valid entries are bitwise the unchecked formula
(gradients included); and the same condition is a
``checkify.debug_check``, reported only under ``checkify.checkify(f,
errors=checkify.user_checks)`` (docs/library.md, "Checks under jit").
``mu`` / ``log_var`` / ``loc`` take any real value and are not checked.
"""
import jax
import jax.numpy as jnp
import numpy as np

from research.sampling.continuous import _concrete, _where_valid, open_uniform

_FLOAT = jnp.float32


def _broadcast(name, *named_arrays):
  """Cast to float32 and return (arrays, broadcast shape); ValueError on mismatch."""
  arrays = [jnp.asarray(a, _FLOAT) for _, a in named_arrays]
  try:
    shape = jnp.broadcast_shapes(*(a.shape for a in arrays))
  except ValueError as err:
    desc = ", ".join(f"{n} shape {a.shape}" for (n, _), a in zip(named_arrays, arrays))
    raise ValueError(f"{name}: shapes do not broadcast: {desc}") from err
  return arrays, shape


def _check_positive(name, value):
  """ValueError unless concrete ``value`` > 0; returns whether it was traced."""
  concrete = _concrete(value)
  if concrete is not None and not np.all(concrete > 0):
    raise ValueError(f"{name} must be > 0 everywhere, got {concrete}")
  return concrete is None


def _nan_unless_positive(name, traced, value):
  """A traced ``value`` with NaN where it is not > 0 (NaN then propagates)."""
  if not traced:
    return value
  return _where_valid(value > 0, value, jnp.nan, f"{name} must be > 0 everywhere")


def rsample_normal(key, mu, log_var):
  """Reparameterized Gaussian sample (Kingma & Welling 2014).

  z = mu + exp(0.5 log_var) eps, eps ~ N(0, I). dz/dmu = 1,
  dz/dlog_var = 0.5 exp(0.5 log_var) eps.

  Args:
    key: PRNG key.
    mu: mean, any shape.
    log_var: log-variance, broadcastable with ``mu``.

  Returns:
    float32 array of the broadcast shape, differentiable in mu and log_var.
  """
  (mu, log_var), shape = _broadcast("rsample_normal", ("mu", mu), ("log_var", log_var))
  eps = jax.random.normal(key, shape, _FLOAT)
  return mu + jnp.exp(0.5 * log_var) * eps


def sample_normal(key, mu, log_var):
  """Gaussian sample without gradient: stop_gradient(rsample_normal(...)).

  z = stop_gradient(mu + exp(0.5 log_var) eps); the same value as
  ``rsample_normal`` for the same key, zero gradient (Kingma & Welling 2014,
  "sample" vs "rsample").

  Args:
    key: PRNG key.
    mu: mean.
    log_var: log-variance, broadcastable with ``mu``.

  Returns:
    float32 array of the broadcast shape.
  """
  return jax.lax.stop_gradient(rsample_normal(key, mu, log_var))


def rsample_gumbel(key, loc, scale):
  """Reparameterized Gumbel(loc, scale) sample (Gumbel 1954; inverse CDF).

  z = loc - scale log(-log u), u ~ U(0, 1) open. dz/dloc = 1,
  dz/dscale = -log(-log u) = (z - loc) / scale.

  Args:
    key: PRNG key.
    loc: location.
    scale: scale > 0 (ValueError when concrete; traced: NaN where not),
      broadcastable with ``loc``.

  Returns:
    float32 array of the broadcast shape.
  """
  traced = _check_positive("rsample_gumbel: scale", scale)
  (loc, scale), shape = _broadcast("rsample_gumbel", ("loc", loc), ("scale", scale))
  scale = _nan_unless_positive("rsample_gumbel: scale", traced, scale)
  g = -jnp.log(-jnp.log(open_uniform(key, shape)))
  return loc + scale * g


def rsample_logistic(key, loc, scale):
  """Reparameterized Logistic(loc, scale) sample (inverse CDF, the logit of u).

  z = loc + scale (log u - log(1 - u)), u ~ U(0, 1) open; F(z) =
  sigmoid((z - loc) / scale). Used e.g. for the Binary Concrete relaxation
  (Maddison et al. 2017).

  Args:
    key: PRNG key.
    loc: location.
    scale: scale > 0 (ValueError when concrete; traced: NaN where not),
      broadcastable with ``loc``.

  Returns:
    float32 array of the broadcast shape.
  """
  traced = _check_positive("rsample_logistic: scale", scale)
  (loc, scale), shape = _broadcast("rsample_logistic", ("loc", loc), ("scale", scale))
  scale = _nan_unless_positive("rsample_logistic: scale", traced, scale)
  u = open_uniform(key, shape)
  return loc + scale * (jnp.log(u) - jnp.log1p(-u))


def rsample_exponential(key, rate):
  """Reparameterized Exponential(rate) sample (inverse CDF; Devroye 1986).

  z = -log(u) / rate, u ~ U(0, 1) open (1 - u is again uniform, so this is
  F^{-1}(1 - u) with F(z) = 1 - exp(-rate z)). dz/drate = -z / rate.

  Args:
    key: PRNG key.
    rate: rate > 0 (ValueError when concrete; traced: NaN where not);
      mean 1 / rate.

  Returns:
    float32 array of ``rate.shape``.
  """
  traced = _check_positive("rsample_exponential: rate", rate)
  rate = _nan_unless_positive("rsample_exponential: rate", traced,
                              jnp.asarray(rate, _FLOAT))
  return -jnp.log(open_uniform(key, rate.shape)) / rate
