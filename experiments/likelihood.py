"""Held-out bits/dim of image density models on uniformly dequantized data.

Shared by the families that report a likelihood under the dequantization convention of
docs/likelihood.md (research/metrics/likelihood.py): integer levels x in {0..L-1}^D of
the held-out images, y = (x + u) / L with u ~ U(0, 1)^D (example i's u from
fold_in(key, i), so the first n images get the same u whatever n is), mapped to the
model's pixel range, and

    bits/dim = (-log p(y) - log_jacobian + D log L) / (D ln 2)      per image,

log_jacobian = D log 2 for models in [-1, 1] (0 for [0, 1]), reported as the mean over
images with its standard error std / sqrt(n). L is config.data.dequantize, the levels
the model was trained to spread its mass over; a model trained on the discrete levels
(dequantize = 0) is refused, since its density at dequantized points means nothing.

    x = dequantized_heldout(key, dataset, levels, num_images)       # (n, H, W, C), model space
    out = bits_summary(nll_nats, dataset, levels)                   # {"bits_per_dim", ...}
    out = ode_bits_per_dim(log_likelihood, params, key, dataset, num_levels=L, ...)

`ode_bits_per_dim` runs a per-image log-likelihood (research/flow/likelihood.py or
research/diffusion/likelihood.py) in jitted batches; the flow_matching and diffusion
families call it from their `heldout_bits_per_dim`.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.data import check_on_grid
from experiments.pixels import from_unit, to_unit
from research.metrics import likelihood as likelihood_lib


def num_levels(config) -> int:
  """config.data.dequantize (the L the model was trained on) of an unconditional model;
  ValueError naming config.data.dequantize if 0, config.model.num_classes if > 0 (a
  class-conditional model gives p(x | y), not p(x))."""
  classes = int(config.get("model", {}).get("num_classes", 0) or 0)
  if classes:
    raise ValueError(f"config.model.num_classes={classes}: heldout_bits_per_dim scores p(x) of "
                     f"an unconditional model; a class-conditional one gives p(x | y)")
  levels = int(config.data.get("dequantize", 0) or 0)
  if levels < 2:
    raise ValueError(f"config.data.dequantize={levels}: a dequantized held-out likelihood needs "
                     f"a model trained on dequantized data (config.data.dequantize = L >= 2, "
                     f"digits: 17); a model of the discrete levels has no meaningful density "
                     f"at dequantized points")
  return levels


def heldout_levels(dataset, num_levels: int, num_images: int = 0) -> np.ndarray:
  """The first num_images (0: all) held-out images as integer levels round(u (L - 1)), float32."""
  test = np.asarray(dataset.test)
  if isinstance(num_images, bool) or not isinstance(num_images, int) or not \
      0 <= num_images <= test.shape[0]:
    raise ValueError(f"num_images must be an integer in [0, {test.shape[0]}] (0: all held-out "
                     f"images), got {num_images!r}")
  unit = np.asarray(to_unit(test[:num_images or None], dataset.pixel_range), np.float64)
  check_on_grid(unit, num_levels, dataset.name)
  return np.round(unit * (num_levels - 1)).astype(np.float32)


def dequantized_heldout(key, dataset, num_levels: int, num_images: int = 0) -> jax.Array:
  """(n, H, W, C) dequantized held-out images (k + u) / L in the model's pixel range."""
  y = likelihood_lib.dequantize(key, heldout_levels(dataset, num_levels, num_images), num_levels)
  return from_unit(y, dataset.pixel_range)


def log_jacobian(dataset, num_dims: int) -> float:
  """log |det dy'/dy| of the map from [0, 1] to the model space: D log 2 for [-1, 1]."""
  return num_dims * math.log(2.0) if dataset.pixel_range == "symmetric" else 0.0


def bits_summary(nll_nats, dataset, num_levels: int) -> dict:
  """{"bits_per_dim", "bits_per_dim_stderr", "num_images", "per_image_bits"} of per-image
  model-space NLLs (nats); per_image_bits is a float64 numpy array (n,)."""
  nll = np.asarray(nll_nats, np.float64).reshape(-1)
  dims = math.prod(dataset.shape)
  bits = likelihood_lib.dequantized_bits_per_dim(nll, dims, num_levels,
                                                 log_jacobian(dataset, dims))
  mean, stderr = likelihood_lib.mean_and_stderr(bits)
  return {"bits_per_dim": mean, "bits_per_dim_stderr": stderr, "num_images": int(nll.size),
          "per_image_bits": bits}


def per_image_log_likelihood(log_likelihood, params, key, x, batch_size: int):
  """(log_p (n,), nfe (n,), compile_seconds) of log_likelihood(params, key_i, x[i:i+1]) for
  every image i, key_i = fold_in(key, i), in jitted batches of batch_size (the last one
  padded, so one compiled program serves all; a padded row's result is dropped)."""
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
  n = int(x.shape[0])
  batch_size = min(batch_size, n)

  def run(params, keys, xb):
    one = lambda k, xi: log_likelihood(params, k, xi[None])  # noqa: E731
    log_p, nfe = jax.vmap(one)(keys, xb)
    return log_p[:, 0], nfe[:, 0]

  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
  t0 = time.perf_counter()
  compiled = jax.jit(run).lower(params, keys[:batch_size], x[:batch_size]).compile()
  compile_seconds = time.perf_counter() - t0
  log_ps, nfes = [], []
  for start in range(0, n, batch_size):
    idx = np.minimum(np.arange(start, start + batch_size), n - 1)   # pad with the last image
    log_p, nfe = compiled(params, keys[idx], x[idx])
    keep = min(batch_size, n - start)
    log_ps.append(np.asarray(log_p)[:keep])
    nfes.append(np.asarray(nfe)[:keep])
  return np.concatenate(log_ps), np.concatenate(nfes), compile_seconds


def ode_bits_per_dim(log_likelihood, params, key, dataset, *, num_levels: int,
                     num_images: int = 0, batch_size: int = 16) -> dict:
  """Held-out dequantized bits/dim of an ODE density model (module docstring).

  log_likelihood(params, key, x) -> (log_p (B,), nfe (B,)) in model space (e.g.
  research.flow.likelihood.log_likelihood with the family's velocity); the first
  num_images (0: all) test images are dequantized with fold_in(key, 0) and image i's
  Hutchinson probes come from fold_in(fold_in(key, 1), i). Returns bits_summary's keys
  plus "nfe_mean" (augmented-field evaluations per image), "compile_seconds" and
  "seconds" (wall time of the solves after compilation).
  """
  t0 = time.perf_counter()
  k_deq, k_probe = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
  x = dequantized_heldout(k_deq, dataset, num_levels, num_images)
  log_p, nfe, compile_s = per_image_log_likelihood(log_likelihood, params, k_probe, x,
                                                   batch_size)
  out = bits_summary(-log_p, dataset, num_levels)
  return {**out, "nfe_mean": float(np.mean(nfe)), "compile_seconds": compile_s,
          "seconds": time.perf_counter() - t0 - compile_s}
