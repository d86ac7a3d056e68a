"""Training data as pure functions of a key: `dataset.sample(key, n) -> (n, ...)`.

Every batch is drawn from fold_in(seed key, step), so the data order is a
function of (seed, step) and a resumed run sees exactly the batches an
uninterrupted one would. Sampling runs inside the jitted train step.
"""

from __future__ import annotations

import dataclasses

import jax

from research.data import toy


@dataclasses.dataclass(frozen=True)
class ToyDataset:
  """A 2-D toy distribution from research.data.toy (infinite, generated on device)."""
  name: str
  shape: tuple = (2,)

  def sample(self, key: jax.Array, n: int) -> jax.Array:
    return toy.sample(self.name, key, n)


def dataset_names() -> tuple[str, ...]:
  return tuple(toy.NAMES)


def make_dataset(data_config):
  """The dataset named by config.data.name."""
  name = data_config.name
  if name in toy.NAMES:
    return ToyDataset(name)
  raise ValueError(f"config.data.name must be one of {dataset_names()}, got {name!r}")
