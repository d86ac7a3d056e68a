"""Sample quality against fresh data draws, with the noise floor of the metric itself."""

from __future__ import annotations

import jax

from research.metrics import distances


def sample_quality(key: jax.Array, samples: jax.Array, dataset) -> dict:
  """W2 / MMD / energy distance of `samples` to a fresh data draw of the same size.

  w2_noise_floor is W2 between two independent data draws of that size: the value
  a perfect model would get. w2_ratio = w2 / w2_noise_floor (1 is perfect).
  """
  n = samples.shape[0]
  k_ref, k_floor = jax.random.split(key)
  ref = dataset.sample(k_ref, n).reshape(n, -1)
  other = dataset.sample(k_floor, n).reshape(n, -1)
  flat = samples.reshape(n, -1)
  w2 = float(distances.wasserstein2(flat, ref))
  floor = float(distances.wasserstein2(other, ref))
  return {
      "w2": w2,
      "w2_noise_floor": floor,
      "w2_ratio": w2 / floor,
      "mmd": float(distances.mmd(flat, ref)),
      "energy": float(distances.energy_distance(flat, ref)),
  }
