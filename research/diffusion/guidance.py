"""Model wrappers for guided sampling: classifier-free guidance (with rescale) and dynamic thresholding.

Time convention: continuous t in [0, 1], t = 1 is noise, t = 0 is clean data,
x_t = alpha(t) x0 + sigma(t) eps (research/diffusion/schedules.py). Each
wrapper takes a network and returns a plain model_fn(x, t) -> prediction (t of
shape (batch,)), so it plugs into every sampler of research/diffusion/samplers.py.

* `classifier_free_guidance`: eps = eps_u + w (eps_c - eps_u) (Ho & Salimans
  2022) with the guidance rescale of Lin et al. 2024.
* `dynamic_thresholding`: Imagen's per-example clipping of the x0 prediction
  (Saharia et al. 2022).
* `static_clipping`: DDPM's clip of the x0 prediction to the data range [-1, 1].
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from research.diffusion import parameterization as param

__all__ = ["classifier_free_guidance", "guidance_rescale", "dynamic_thresholding",
           "static_clipping", "threshold_x0"]


def _concrete(value):
  return not isinstance(value, jax.core.Tracer)


def _check_guidance_scale(guidance_scale):
  if _concrete(guidance_scale) and not float(guidance_scale) >= 0:
    raise ValueError(f"guidance_scale must be >= 0, got guidance_scale={guidance_scale!r}")


def _check_rescale(rescale):
  if _concrete(rescale) and not 0.0 <= float(rescale) <= 1.0:
    raise ValueError(f"rescale (phi) must lie in [0, 1], got rescale={rescale!r}")


def _batch_std(a):
  """Standard deviation over all non-batch axes, shape (B, 1, ..., 1)."""
  axes = tuple(range(1, a.ndim))
  return jnp.std(a, axis=axes, keepdims=True)


def guidance_rescale(guided, cond, rescale):
  """Guidance rescale: phi * guided std(cond)/std(guided) + (1 - phi) guided (Lin et al. 2024, eq. 15-16).

  The standard deviations are per example over all non-batch axes, so
  phi = 1 gives std(result) = std(cond) exactly and phi = 0 returns `guided`
  (plain CFG). Where std(guided) = 0 the ratio is taken as 1.
  """
  _check_rescale(rescale)
  std_c, std_g = _batch_std(cond), _batch_std(guided)
  safe = std_g > 0
  factor = jnp.where(safe, std_c / jnp.where(safe, std_g, 1.0), 1.0)
  return rescale * (guided * factor) + (1.0 - rescale) * guided


def classifier_free_guidance(model_fn, y, *, guidance_scale, null_label, rescale=0.0,
                             batched=True):
  """Wraps a conditional network model_fn(x, t, y) into a guided model_fn(x, t) (Ho & Salimans 2022).

      out = out_u + w (out_c - out_u),   out_c = model_fn(x, t, y),  out_u = model_fn(x, t, null),

  w = guidance_scale >= 0: w = 1 is the plain conditional model, w = 0 the
  unconditional one, w > 1 extrapolates (linear in w). With rescale = phi in
  [0, 1] the result is mixed with its rescaled version out std(out_c)/std(out),
  std over the non-batch axes per example (`guidance_rescale`, Lin et al. 2024,
  "Common diffusion noise schedules and sample steps are flawed", who use
  phi = 0.7). Guidance is applied to whatever the network predicts: the
  conversions between eps, x0, v and the score are affine in the prediction
  with the same (x, t), so plain CFG gives the same sample for every
  prediction type; the rescale is not, and Lin et al. apply it to their
  v-prediction output (diffusers to eps).

  Args:
    model_fn: network(x, t, y) -> prediction, x of shape (B, ...), t (B,).
    y: the labels / conditioning, an array with leading batch axis B (the
      batch the samplers call the wrapper with).
    guidance_scale: w >= 0 (a float or a traced scalar).
    null_label: the "no conditioning" input the network was trained with
      (e.g. the extra class index or a zero embedding); broadcast to y's shape.
    rescale: phi in [0, 1]; 0 (default) is plain CFG.
    batched: True evaluates conditional and unconditional in ONE call on the
      concatenated batch (2B examples); False makes two calls of B.

  Cost: each call of the wrapper is one sampler NFE but two network passes per
  example (one call of 2B if batched, two calls of B otherwise). A concrete
  w = 1 calls only the conditional model and a concrete w = 0 with phi = 0
  only the unconditional one (one pass of B).

  Raises ValueError for guidance_scale < 0 or rescale outside [0, 1].
  """
  _check_guidance_scale(guidance_scale)
  _check_rescale(rescale)
  if not isinstance(batched, bool):
    raise ValueError(f"batched must be a bool, got batched={batched!r}")
  y = jnp.asarray(y)
  null = jnp.broadcast_to(jnp.asarray(null_label, y.dtype), y.shape)
  only_cond = _concrete(guidance_scale) and float(guidance_scale) == 1.0
  only_uncond = (_concrete(guidance_scale) and float(guidance_scale) == 0.0
                 and _concrete(rescale) and float(rescale) == 0.0)

  def guided(x, t):
    if x.shape[0] != y.shape[0]:
      raise ValueError(f"y has batch size {y.shape[0]} but the sampler called the guided "
                       f"model with x.shape={x.shape}")
    if only_cond:
      return model_fn(x, t, y)
    if only_uncond:
      return model_fn(x, t, null)
    if batched:
      both = model_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                      jnp.concatenate([y, null]))
      out_c, out_u = both[: x.shape[0]], both[x.shape[0]:]
    else:
      out_c, out_u = model_fn(x, t, y), model_fn(x, t, null)
    out = out_u + guidance_scale * (out_c - out_u)
    if _concrete(rescale) and float(rescale) == 0.0:
      return out
    return guidance_rescale(out, out_c, rescale)

  return guided


def _check_percentile(percentile):
  if _concrete(percentile) and not 0.0 < float(percentile) <= 1.0:
    hint = (" (a quantile in (0, 1] as jnp.quantile takes; jnp.percentile's 0-100 scale"
            " is a known porting bug)" if float(percentile) > 1.0 else "")
    raise ValueError(f"percentile must lie in (0, 1], got percentile={percentile!r}{hint}")


def threshold_x0(x0, percentile=0.995, max_value=1.0):
  """Imagen's dynamic thresholding of an x0 prediction, per example (Saharia et al. 2022, sec. 2.3).

      s = max(max_value, quantile(|x0|, percentile)),    x0 <- clip(x0, -s, s) max_value / s,

  the quantile taken over all non-batch entries of each example (jnp.quantile,
  percentile in (0, 1]; Imagen uses p = 0.995 and data range max_value = 1, so
  s = max(1, q) and x0 <- clip(x0, -s, s)/s). An example whose |x0| quantile
  is within [-max_value, max_value] keeps s = max_value: clipping to the data
  range, which leaves an in-range x0 unchanged. Note: diffusers'
  `sample_max_value` is a different parameter (an upper cap on s, with the
  lower bound fixed at 1).
  """
  _check_percentile(percentile)
  _check_max_value(max_value)
  x0 = jnp.asarray(x0)
  flat = jnp.abs(x0.reshape(x0.shape[0], -1))
  s = jnp.maximum(jnp.quantile(flat, percentile, axis=1), max_value)
  s = s.reshape((-1,) + (1,) * (x0.ndim - 1)).astype(x0.dtype)
  return jnp.clip(x0, -s, s) * (max_value / s)


def _x0_wrapper(model_fn, schedule, prediction, transform):
  """model_fn(x, t) with its implied x0 replaced by transform(x0), same prediction type out."""

  def wrapped(x, t):
    pred = model_fn(x, t)
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    x0 = transform(param.to_x0(pred, x, alpha, sigma, prediction))
    return param.convert(x0, x, alpha, sigma, source="x0", target=prediction).astype(pred.dtype)

  return wrapped


def _check_max_value(max_value):
  if _concrete(max_value) and not float(max_value) > 0:
    raise ValueError(f"max_value must be > 0, got max_value={max_value!r}")


def dynamic_thresholding(model_fn, schedule, prediction="eps", percentile=0.995,
                         max_value=1.0):
  """Wraps model_fn(x, t) so that its implied x0 is dynamically thresholded (Saharia et al. 2022).

  x0 = to_x0(pred, x, alpha(t), sigma(t)); x0 <- `threshold_x0`(x0, percentile,
  max_value); the result is converted back to the same prediction type (e.g.
  eps = (x - alpha x0)/sigma), so the wrapper is called by samplers with the
  same `prediction=`. One network call per call. Needs sigma(t) > 0 for eps,
  v and score outputs (samplers never call the model at t = 0). Raises
  ValueError for percentile outside (0, 1] (e.g. 99.5 on jnp.percentile's
  scale), max_value <= 0 or an unknown prediction.
  """
  param.check_prediction(prediction)
  _check_percentile(percentile)
  _check_max_value(max_value)
  return _x0_wrapper(model_fn, schedule, prediction,
                     lambda x0: threshold_x0(x0, percentile, max_value))


def static_clipping(model_fn, schedule, prediction="eps", max_value=1.0):
  """Wraps model_fn(x, t) so that its implied x0 is clipped to [-max_value, max_value].

  DDPM's `clip_denoised` (Ho et al. 2020, official code; diffusers' `clip_sample`):
  x0 <- clip(to_x0(pred, x, alpha(t), sigma(t)), -max_value, max_value), converted
  back to the same prediction type. For data in [-1, 1] this removes the error
  amplification of the eps -> x0 map, |x0 error| = sigma/alpha |eps error|, where
  alpha(t) is tiny (the discrete cosine schedule has alpha(T) = 4.9e-5, so an eps
  error of 0.05 becomes an x0 error of ~1000 at the first sampling step). Raises
  ValueError for max_value <= 0 or an unknown prediction.
  """
  param.check_prediction(prediction)
  _check_max_value(max_value)
  return _x0_wrapper(model_fn, schedule, prediction,
                     lambda x0: jnp.clip(x0, -max_value, max_value))
