"""Conversions between what a diffusion network predicts: eps, x0, v or the score.

Time convention: continuous t in [0, 1], t = 1 is noise (research/diffusion/
schedules.py); this module never sees t, only the coefficients alpha = alpha(t)
and sigma = sigma(t) of the forward process

    x = alpha x0 + sigma eps,     v = alpha eps - sigma x0,     score = -eps / sigma,

(Ho et al. 2020 for eps; Salimans & Ho 2022 for v; Song & Ermon 2019 / Vincent
2011 for the score, whose Tweedie form is score = (alpha x0_hat - x) / sigma^2).
Inverting the pair (x, v) gives, for any alpha, sigma,

    x0 = (alpha x - sigma v) / (alpha^2 + sigma^2),
    eps = (sigma x + alpha v) / (alpha^2 + sigma^2),

which for VP schedules (alpha^2 + sigma^2 = 1) is x0 = alpha x - sigma v,
eps = alpha v + sigma x (docs/math.md).

Shapes: `pred` and `x` share one shape (B, ...). alpha and sigma are scalars,
arrays of shape (B,) (one value per example, reshaped to (B, 1, ..., 1)), or
arrays broadcastable against x. x0 from eps divides by alpha, eps from x0 and
the score divide by sigma: use t > 0 (sigma > 0) there.
"""
from __future__ import annotations

import jax.numpy as jnp

__all__ = [
    "PREDICTIONS",
    "check_prediction",
    "broadcast_to_batch",
    "to_eps",
    "to_x0",
    "to_v",
    "to_score",
    "convert",
    "edm_precond",
]

PREDICTIONS = ("eps", "x0", "v", "score")


def check_prediction(prediction, name="prediction"):
  """Refuse an unknown prediction type with a ValueError naming the argument."""
  if prediction not in PREDICTIONS:
    raise ValueError(f"unknown {name} {prediction!r}; valid: {list(PREDICTIONS)}")
  return prediction


def broadcast_to_batch(c, x, name="coefficient"):
  """c reshaped to broadcast against x: a (B,) vector becomes (B, 1, ..., 1).

  Scalars pass through; arrays of x's rank must broadcast against x.
  """
  c = jnp.asarray(c)
  x_ndim = jnp.ndim(x)
  if c.ndim == 0:
    return c
  if c.ndim == 1 and x_ndim >= 1 and c.shape[0] == jnp.shape(x)[0]:
    return c.reshape(c.shape + (1,) * (x_ndim - 1))
  if c.ndim == x_ndim:
    try:
      jnp.broadcast_shapes(c.shape, jnp.shape(x))
      return c
    except ValueError:
      pass
  raise ValueError(f"{name} must be a scalar, shape (batch,) = ({jnp.shape(x)[0]},) or "
                   f"broadcastable to x.shape {jnp.shape(x)}, got shape {c.shape}")


def _coefs(x, alpha, sigma):
  return (broadcast_to_batch(alpha, x, "alpha"), broadcast_to_batch(sigma, x, "sigma"))


def _check_pair(pred, x):
  if jnp.shape(pred) != jnp.shape(x):
    raise ValueError(f"pred and x must have the same shape, got pred.shape={jnp.shape(pred)} "
                     f"and x.shape={jnp.shape(x)}")


def to_x0(pred, x, alpha, sigma, prediction):
  """The clean-data estimate x0 from a prediction of type `prediction`.

  eps: x0 = (x - sigma eps)/alpha (Ho et al. 2020); v: x0 = (alpha x - sigma v)/(alpha^2 + sigma^2)
  (Salimans & Ho 2022); score: x0 = (x + sigma^2 score)/alpha (Tweedie, Efron 2011).
  """
  check_prediction(prediction)
  _check_pair(pred, x)
  a, s = _coefs(x, alpha, sigma)
  if prediction == "x0":
    return pred
  if prediction == "eps":
    return (x - s * pred) / a
  if prediction == "v":
    return (a * x - s * pred) / (a * a + s * s)
  return (x + s * s * pred) / a


def to_eps(pred, x, alpha, sigma, prediction):
  """The noise estimate eps from a prediction of type `prediction`.

  x0: eps = (x - alpha x0)/sigma; v: eps = (sigma x + alpha v)/(alpha^2 + sigma^2)
  (Salimans & Ho 2022); score: eps = -sigma score (Song & Ermon 2019).
  """
  check_prediction(prediction)
  _check_pair(pred, x)
  a, s = _coefs(x, alpha, sigma)
  if prediction == "eps":
    return pred
  if prediction == "x0":
    return (x - a * pred) / s
  if prediction == "v":
    return (s * x + a * pred) / (a * a + s * s)
  return -s * pred


def to_v(pred, x, alpha, sigma, prediction):
  """The velocity v = alpha eps - sigma x0 from a prediction of type `prediction` (Salimans & Ho 2022)."""
  check_prediction(prediction)
  _check_pair(pred, x)
  if prediction == "v":
    return pred
  a, s = _coefs(x, alpha, sigma)
  eps = to_eps(pred, x, alpha, sigma, prediction)
  x0 = to_x0(pred, x, alpha, sigma, prediction)
  return a * eps - s * x0


def to_score(pred, x, alpha, sigma, prediction):
  """The score grad log p_t(x) = -eps / sigma from a prediction of type `prediction` (Song & Ermon 2019)."""
  check_prediction(prediction)
  _check_pair(pred, x)
  if prediction == "score":
    return pred
  _, s = _coefs(x, alpha, sigma)
  return -to_eps(pred, x, alpha, sigma, prediction) / s


_TO = {"eps": to_eps, "x0": to_x0, "v": to_v, "score": to_score}


def convert(pred, x, alpha, sigma, *, source, target):
  """Convert a `source`-type prediction into a `target`-type one at (x, alpha, sigma).

  Uses x = alpha x0 + sigma eps, v = alpha eps - sigma x0, score = -eps/sigma
  (module docstring). Raises ValueError for unknown source / target names.
  """
  check_prediction(source, "source")
  check_prediction(target, "target")
  return _TO[target](pred, x, alpha, sigma, source)


def edm_precond(sigma, sigma_data=0.5):
  """EDM preconditioning (c_skip, c_out, c_in, c_noise) at noise level sigma (Karras et al. 2022, table 1).

  c_skip = sd^2/(s^2 + sd^2), c_out = s sd/sqrt(s^2 + sd^2), c_in = 1/sqrt(s^2 + sd^2),
  c_noise = ln(s)/4, so that D(x; s) = c_skip x + c_out F(c_in x, c_noise).
  """
  if not sigma_data > 0:
    raise ValueError(f"sigma_data must be > 0, got sigma_data={sigma_data!r}")
  s = jnp.asarray(sigma)
  if not jnp.issubdtype(s.dtype, jnp.floating):
    s = s.astype(jnp.float32)
  sd2 = sigma_data ** 2
  total = s * s + sd2
  c_skip = sd2 / total
  c_out = s * sigma_data * jnp.reciprocal(jnp.sqrt(total))
  c_in = jnp.reciprocal(jnp.sqrt(total))
  c_noise = 0.25 * jnp.log(s)
  return c_skip, c_out, c_in, c_noise
