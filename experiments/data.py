"""Training data as pure functions of a key: `dataset.sample(key, n) -> (n, *shape)`.

Every batch is drawn from a key derived from (seed, step), so the data order is
a function of (seed, step) and a resumed run sees exactly the batches an
uninterrupted one would. Sampling runs inside the jitted train step.

Datasets:
- the 2-D toy distributions of research.data.toy (infinite, generated on device);
- "digits" / "digits_binary": scikit-learn's 8x8 handwritten digits (ships with
  scikit-learn, no download), pixels scaled to [0, 1] (or binarized at 0.5), shape
  (8, 8, 1); train = the first 1500 images, test = the remaining 297. Training
  batches draw indices uniformly with replacement from a per-step key.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from research.data import toy

DIGITS_NAMES = ("digits", "digits_binary")
DIGITS_NUM_TRAIN = 1500


@dataclasses.dataclass(frozen=True)
class ToyDataset:
  """A 2-D toy distribution from research.data.toy (infinite, generated on device)."""
  name: str
  shape: tuple = (2,)

  def sample(self, key: jax.Array, n: int) -> jax.Array:
    return toy.sample(self.name, key, n)

  def heldout(self, key: jax.Array, n: int) -> jax.Array:
    return self.sample(key, n)


@functools.cache
def _digits(binary: bool):
  from sklearn.datasets import load_digits  # ships its data: no download
  digits = load_digits()
  images = (digits.images / 16.0).astype(np.float32)[..., None]
  if binary:
    images = (images >= 0.5).astype(np.float32)
  return images, digits.target.astype(np.int32)


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayDataset:
  """A finite in-memory image set; batches are uniform draws (with replacement) from train."""
  name: str
  train: np.ndarray
  test: np.ndarray
  train_labels: np.ndarray
  test_labels: np.ndarray

  @property
  def shape(self) -> tuple:
    return tuple(self.train.shape[1:])

  def sample(self, key: jax.Array, n: int) -> jax.Array:
    idx = jax.random.randint(key, (n,), 0, self.train.shape[0])
    return jnp.asarray(self.train)[idx]

  def heldout(self, key: jax.Array, n: int) -> jax.Array:
    """n held-out images (the first n of a key-dependent permutation of the test split)."""
    if n > self.test.shape[0]:
      raise ValueError(f"n={n} exceeds the {self.test.shape[0]} held-out images of {self.name}")
    return jnp.asarray(self.test)[jax.random.permutation(key, self.test.shape[0])[:n]]


def dataset_names() -> tuple[str, ...]:
  return tuple(toy.NAMES) + DIGITS_NAMES


def make_dataset(data_config):
  """The dataset named by config.data.name."""
  name = data_config.name
  if name in toy.NAMES:
    return ToyDataset(name)
  if name in DIGITS_NAMES:
    images, labels = _digits(binary=name == "digits_binary")
    return ArrayDataset(name, images[:DIGITS_NUM_TRAIN], images[DIGITS_NUM_TRAIN:],
                        labels[:DIGITS_NUM_TRAIN], labels[DIGITS_NUM_TRAIN:])
  raise ValueError(f"config.data.name must be one of {dataset_names()}, got {name!r}")
