"""What sits between a network and a diffusion sampler: prediction conversions, guidance, x0 clipping.

Time convention: continuous t in [0, 1], t = 1 is noise, t = 0 is clean data,
x_t = alpha(t) x0 + sigma(t) eps (research/diffusion/schedules.py). A model is a
plain callable model_fn(x, t) -> prediction with t of shape (batch,); the
prediction type is one of PREDICTIONS ("eps", "x0", "v", "score"), related by

    x = alpha x0 + sigma eps,   v = alpha eps - sigma x0,   score = -eps / sigma

(parameterization.py, whose conversions are re-exported here). Samplers call
the model only through `predict` (one call, converted to what the sampler
needs); a model of another type is wrapped with `with_prediction`.
Classifier-free guidance (Ho & Salimans 2022) and x0 clipping (DDPM's static
clip, Imagen's dynamic thresholding, Saharia et al. 2022) are model wrappers
of research/diffusion/guidance.py, re-exported here; `clip_x0` picks one by name.
"""
from __future__ import annotations

import jax.numpy as jnp

from research import registry
from research.diffusion.guidance import (classifier_free_guidance, dynamic_thresholding,
                                         guidance_rescale, static_clipping, threshold_x0)
from research.diffusion.parameterization import (PREDICTIONS, check_prediction, convert, to_eps,
                                                 to_score, to_v, to_x0)

__all__ = [
    "PREDICTIONS", "check_prediction", "to_eps", "to_x0", "to_v", "to_score", "convert",
    "PREDICTION", "CLIP_MODES", "batch_time", "predict", "predict_x0_eps", "with_prediction",
    "clip_x0", "classifier_free_guidance", "guidance_rescale", "dynamic_thresholding",
    "static_clipping", "threshold_x0",
]

CLIP_MODES = ("none", "static", "dynamic")

# The `prediction` option every diffusion sampler takes (the type model_fn returns).
PREDICTION = registry.Option("prediction", "eps", str, check_prediction,
                             f"what model_fn predicts, one of {PREDICTIONS}")


def batch_time(t, x):
  """The scalar time t as a (batch,) float32 array for model_fn(x, t)."""
  return jnp.full((x.shape[0],), t, dtype=jnp.float32)


def predict(model_fn, x, t, alpha, sigma, prediction, target):
  """One network call at (x, t) (scalar t, alpha = alpha(t), sigma = sigma(t)) as a `target` prediction.

  parameterization.convert from `prediction` to `target`, e.g. x0 = (x - sigma eps)/alpha;
  the result has x's dtype.
  """
  check_prediction(target, "target")
  pred = model_fn(x, batch_time(t, x))
  return convert(pred, x, alpha, sigma, source=prediction, target=target).astype(x.dtype)


def predict_x0_eps(model_fn, x, t, alpha, sigma, prediction):
  """One network call at (x, t) converted to (x0_pred, eps_pred) (to_x0 / to_eps)."""
  pred = model_fn(x, batch_time(t, x))
  return (to_x0(pred, x, alpha, sigma, prediction).astype(x.dtype),
          to_eps(pred, x, alpha, sigma, prediction).astype(x.dtype))


def with_prediction(model_fn, schedule, source, target):
  """model_fn(x, t) returning a `source` prediction, wrapped to return a `target` one.

  The conversion at (x, alpha(t), sigma(t)) of parameterization.convert; t has
  shape (batch,). source == target returns model_fn itself.
  """
  check_prediction(source, "source")
  check_prediction(target, "target")
  if source == target:
    return model_fn

  def converted(x, t):
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    return convert(model_fn(x, t), x, alpha, sigma, source=source, target=target)

  return converted


def clip_x0(model_fn, schedule, prediction, mode):
  """model_fn with its implied x0 clipped: mode "none", "static" (to [-1, 1],
  `static_clipping`) or "dynamic" (Imagen's p = 0.995, `dynamic_thresholding`)."""
  registry.check_choice("clip_x0", mode, CLIP_MODES)
  if mode == "static":
    return static_clipping(model_fn, schedule, prediction)
  if mode == "dynamic":
    return dynamic_thresholding(model_fn, schedule, prediction)
  return model_fn
