"""Mode coverage of samples from a model of a Gaussian mixture with known centres.

The standard toy-GAN metric (Metz et al. 2017, "Unrolled GANs"; Srivastava et
al. 2017, "VEEGAN"; Lin et al. 2018, "PacGAN"):

  * each sample x_i is assigned to its nearest centre k(i) = argmin_k ||x_i - mu_k||;
  * it is HIGH QUALITY (HQ) if ||x_i - mu_k(i)|| <= num_std * s_k(i) (3 std by
    default; in 2-D a Gaussian puts 1 - exp(-9/2) = 98.9% of its mass there);
  * mode k is HIT if it holds at least `min_count` HQ samples, where

        min_count = max(1, min_fraction * n / K),

    i.e. a fraction of the share a perfect model would give it. The default
    min_fraction = 0.2 is PacGAN's rule (a mode is lost with fewer than 20 of the
    100 samples it expects: 2500 samples, 25 modes); 0 < min_fraction means a mode
    with a stray sample or two is not counted as covered.
  * mode_kl = KL(h || U) of the HQ-sample histogram h over modes against the
    uniform mixture weights (0 when balanced, log K when all HQ samples sit in one
    mode; log K as well when there are no HQ samples). reverse_mode_kl = KL(U || h~)
    with h~ smoothed by +0.5 per mode (Jeffreys prior), finite when modes are missing.

Pure JAX; n and K are static.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

__all__ = ["mode_coverage", "min_hq_count"]

REVERSE_KL_SMOOTHING = 0.5


def min_hq_count(num_samples: int, num_modes: int, min_fraction: float = 0.2) -> float:
  """The HQ-sample count a mode needs to be hit: max(1, min_fraction * n / K)."""
  if not 0 <= min_fraction <= 1:
    raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction}")
  return max(1.0, min_fraction * num_samples / num_modes)


def mode_coverage(samples: jax.Array, centres: jax.Array, stds, *, num_std: float = 3.0,
                  min_fraction: float = 0.2) -> dict:
  """Modes hit, HQ fraction, per-mode counts and histogram KLs (see the module docstring).

  Args:
    samples: (n, d) model samples.
    centres: (K, d) mode centres mu_k.
    stds: scalar or (K,) isotropic standard deviation of each mode.
    num_std: HQ radius in units of the mode's std (3 in the papers above).
    min_fraction: a mode is hit with >= max(1, min_fraction * n / K) HQ samples.

  Returns a dict of arrays: modes_hit (int), num_modes (int), hq_fraction,
  hq_counts (K,) HQ samples per mode, assigned_counts (K,) all samples per
  nearest mode, mode_kl, reverse_mode_kl, min_hq_count.
  """
  samples = jnp.asarray(samples, jnp.float32)
  centres = jnp.asarray(centres, jnp.float32)
  if samples.ndim != 2 or centres.ndim != 2 or samples.shape[1] != centres.shape[1]:
    raise ValueError(f"samples must be (n, d) and centres (K, d) with the same d, got "
                     f"{samples.shape} and {centres.shape}")
  if num_std <= 0:
    raise ValueError(f"num_std must be > 0, got {num_std}")
  n, num_modes = samples.shape[0], centres.shape[0]
  stds = jnp.broadcast_to(jnp.asarray(stds, jnp.float32), (num_modes,))
  return _coverage(samples, centres, stds, float(num_std), min_hq_count(n, num_modes, min_fraction))


@functools.partial(jax.jit, static_argnums=(3, 4))
def _coverage(samples, centres, stds, num_std: float, threshold: float) -> dict:
  n, num_modes = samples.shape[0], centres.shape[0]
  sq_dist = jnp.sum(jnp.square(samples[:, None, :] - centres[None, :, :]), axis=-1)  # (n, K)
  nearest = jnp.argmin(sq_dist, axis=1)
  dist = jnp.sqrt(jnp.take_along_axis(sq_dist, nearest[:, None], axis=1)[:, 0])
  hq = dist <= num_std * stds[nearest]
  one_hot = jax.nn.one_hot(nearest, num_modes, dtype=jnp.float32)
  assigned_counts = jnp.sum(one_hot, axis=0)
  hq_counts = jnp.sum(one_hot * hq[:, None], axis=0)
  total_hq = jnp.sum(hq_counts)

  h = hq_counts / jnp.maximum(total_hq, 1.0)
  mode_kl = jnp.where(total_hq > 0, jnp.sum(jax.scipy.special.xlogy(h, h * num_modes)),
                      math.log(num_modes))
  h_smooth = (hq_counts + REVERSE_KL_SMOOTHING) / (total_hq + REVERSE_KL_SMOOTHING * num_modes)
  reverse_kl = jnp.mean(-jnp.log(num_modes * h_smooth))
  return {
      "modes_hit": jnp.sum(hq_counts >= threshold).astype(jnp.int32),
      "num_modes": jnp.asarray(num_modes, jnp.int32),
      "hq_fraction": total_hq / n,
      "hq_counts": hq_counts.astype(jnp.int32),
      "assigned_counts": assigned_counts.astype(jnp.int32),
      "mode_kl": mode_kl,
      "reverse_mode_kl": reverse_kl,
      "min_hq_count": jnp.asarray(threshold, jnp.float32),
  }
