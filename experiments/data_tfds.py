"""tfds image sets read on the host through `tfds.data_source` + grain (no TensorFlow).

Contract (what experiments/trainer.py relies on):

`TfdsDataset(name, *, pixel_range="unit", data_dir=None)` for name in
mnist | fashion_mnist | cifar10 | celeb_a has
  - `name`, `shape` = (H, W, C) after preprocessing, `num_classes` (10, or 0 for
    celeb_a), `pixel_range`, `host_data = True` (batches come from the host);
  - `train_iterator(*, seed, batch_size, draws_per_step=1, process_index=0,
    process_count=1, state=None) -> TfdsIterator`; `next(it)` returns
    {"x": float32 (draws_per_step, batch_size // process_count, H, W, C) in the
    pixel range, "y": int32 (draws_per_step, batch_size // process_count)}
    (celeb_a has no class label: y = 0), and `it.get_state()` a JSON-serialisable
    dict; `train_iterator(..., state=it.get_state())` continues with exactly the
    batches the uninterrupted iterator would have given;
  - `heldout(key, n)` / `heldout_labeled(key, n)`: the first n of a key-dependent
    permutation of the test split, as jnp arrays;
  - `to_unit(x)`: model-space images -> [0, 1] (clipped).

Record order. The train split is one stream of records, epoch after epoch:
element g of the stream is record perm_e[g mod N] with e = g div N, where perm_e
is grain's index shuffle (`MapDataset.range(N).seed(seed).shuffle().repeat()`,
a Feistel permutation whose seed is derived from `seed` and offset by the epoch e),
so every epoch is a new permutation, reproducible from (seed, epoch), and no
record repeats or is skipped within an epoch (a batch may straddle two epochs).
Global batch b is the stream's elements [b B, (b + 1) B) for B = batch_size;
train step k uses global batches k D, ..., k D + D - 1 for D = draws_per_step.
Process p of P reads only the contiguous slice [p B / P, (p + 1) B / P) of each
global batch (`jax.make_array_from_process_local_data` concatenates the slices
in process order, so the global batch on the devices is the same for every P).
We split global batches rather than the records themselves
(`tfds.split_for_jax_process`) so that the data order, and the iterator state,
do not depend on the number of processes.

State: {"dataset", "seed", "batch_size", "global_batches"} (global batches
consumed so far, plus the informational "epoch"); restoring checks that dataset,
seed and batch_size match and that global_batches is a multiple of draws_per_step.

Preprocessing: uint8 pixels p -> u = p / 255 in [0, 1], then model space u
("unit") or 2 u - 1 ("symmetric"). celeb_a (218 x 178): the centred 140 x 140
crop, resized to 64 x 64 with PIL's antialiased bilinear filter, as in the
CelebA-64 setups of Song et al. 2021 (score_sde) and Song & Ermon 2020 (NCSNv2).
"""

from __future__ import annotations

import dataclasses
import os

import grain
import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from experiments import pixels


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
  """How one tfds set is read: image shape after preprocessing, classes, splits."""
  shape: tuple
  num_classes: int
  crop: int | None = None  # centre crop (pixels) before the resize to shape
  train_split: str = "train"
  test_split: str = "test"


SPECS = {
    "mnist": TfdsSpec((28, 28, 1), 10),
    "fashion_mnist": TfdsSpec((28, 28, 1), 10),
    "cifar10": TfdsSpec((32, 32, 3), 10),
    "celeb_a": TfdsSpec((64, 64, 3), 0, crop=140),
}
READ_THREADS = min(8, os.cpu_count() or 1)  # grain threads preparing step batches
PREFETCH_STEPS = 4                          # step batches prepared ahead
_STATE_KEYS = ("dataset", "seed", "batch_size", "global_batches")


def centre_crop_resize(image: np.ndarray, crop: int, size: int) -> np.ndarray:
  """The centred crop x crop window of a uint8 (H, W, C) image, resized to size x size.

  Offsets ((H - crop) // 2, (W - crop) // 2); resizing uses PIL's bilinear filter,
  which widens its support when shrinking (antialiased). Returns uint8.
  """
  h, w = image.shape[:2]
  if crop > min(h, w):
    raise ValueError(f"crop={crop} exceeds the image size {(h, w)}")
  top, left = (h - crop) // 2, (w - crop) // 2
  window = np.ascontiguousarray(image[top:top + crop, left:left + crop])
  squeeze = window.shape[-1] == 1
  pil = Image.fromarray(window[..., 0] if squeeze else window)
  out = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR))
  return out[..., None] if squeeze else out


class TfdsIterator:
  """This process's step batches of a TfdsDataset's train split (see the module docstring)."""

  def __init__(self, dataset: "TfdsDataset", *, seed: int, batch_size: int,
               draws_per_step: int, process_index: int, process_count: int,
               state: dict | None):
    for arg, value, low in (("seed", seed, 0), ("batch_size", batch_size, 1),
                            ("draws_per_step", draws_per_step, 1),
                            ("process_count", process_count, 1)):
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{arg} must be an integer >= {low}, got {value!r}")
    if seed >= 2**32:
      raise ValueError(f"seed must be < 2**32 (grain's shuffle seed), got {seed}")
    if batch_size % process_count:
      raise ValueError(f"batch_size={batch_size} must be divisible by "
                       f"process_count={process_count}")
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")
    self.dataset, self.seed, self.batch_size = dataset, int(seed), int(batch_size)
    self.draws_per_step = int(draws_per_step)
    source = dataset.source("train")
    self.num_records = len(source)
    if self.num_records < 1:
      raise ValueError(f"the train split of {dataset.name} is empty")
    local = batch_size // process_count
    order = grain.MapDataset.range(self.num_records).seed(self.seed).shuffle().repeat()
    steps = (order.batch(local, drop_remainder=True)[process_index::process_count]
             .map(lambda idx: dataset.read("train", idx))
             .batch(self.draws_per_step))
    options = grain.ReadOptions(num_threads=READ_THREADS, prefetch_buffer_size=PREFETCH_STEPS)
    self._iterator = iter(steps.to_iter_dataset(options))
    self._steps = 0
    if state is not None:
      self._steps = self._check_state(state)
      self._iterator.set_state({"next_index": self._steps})

  def _check_state(self, state) -> int:
    if not isinstance(state, dict) or any(k not in state for k in _STATE_KEYS):
      raise ValueError(f"state must be a dict with keys {_STATE_KEYS} (from get_state()), "
                       f"got {state!r}")
    mine = {"dataset": self.dataset.name, "seed": self.seed, "batch_size": self.batch_size}
    for k, v in mine.items():
      if state[k] != v:
        raise ValueError(f"state[{k!r}]={state[k]!r} does not match this iterator's {k}={v!r}")
    batches = state["global_batches"]
    if not isinstance(batches, int) or batches < 0 or batches % self.draws_per_step:
      raise ValueError(f"state['global_batches']={batches!r} must be a non-negative multiple "
                       f"of draws_per_step={self.draws_per_step}")
    return batches // self.draws_per_step

  def __iter__(self) -> "TfdsIterator":
    return self

  def __next__(self) -> dict:
    batch = next(self._iterator)
    self._steps += 1
    return batch

  def get_state(self) -> dict:
    """JSON-serialisable position: global batches consumed (plus what must match on restore)."""
    batches = self._steps * self.draws_per_step
    return {"dataset": self.dataset.name, "seed": self.seed, "batch_size": self.batch_size,
            "global_batches": batches,
            "epoch": batches * self.batch_size // self.num_records}

  def close(self) -> None:
    """Stop grain's prefetch threads."""
    self._iterator.close()


class TfdsDataset:
  """A tfds image set (mnist, fashion_mnist, cifar10, celeb_a) read through grain.

  Sources open lazily (`source(split)`), so constructing one reads nothing.
  """
  host_data = True
  modality = "images"

  def __init__(self, name: str, *, pixel_range: str = "unit", data_dir: str | None = None):
    if name not in SPECS:
      raise ValueError(f"name must be one of {tuple(SPECS)}, got {name!r}")
    self.name = name
    self.pixel_range = pixels.check_pixel_range(pixel_range)
    self.data_dir = data_dir
    self.spec = SPECS[name]
    self._sources = {}

  @property
  def shape(self) -> tuple:
    """(H, W, C) after preprocessing."""
    return self.spec.shape

  @property
  def num_classes(self) -> int:
    """Number of class labels (0: unlabelled, y = 0)."""
    return self.spec.num_classes

  def source(self, split: str):
    """The random-access `tfds.data_source` of a split ("train" or "test"), opened once."""
    if split not in ("train", "test"):
      raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if split not in self._sources:
      tfds_split = self.spec.train_split if split == "train" else self.spec.test_split
      self._sources[split] = tfds.data_source(self.name, split=tfds_split,
                                              data_dir=self.data_dir)
    return self._sources[split]

  def preprocess(self, image: np.ndarray) -> np.ndarray:
    """One uint8 (h, w, c) record image -> float32 `shape` in the pixel range."""
    image = np.asarray(image)
    if self.spec.crop is not None:
      image = centre_crop_resize(image, self.spec.crop, self.spec.shape[0])
    if image.shape != self.spec.shape:
      raise ValueError(f"{self.name} image has shape {image.shape}, expected {self.spec.shape}")
    return pixels.from_unit(image.astype(np.float32) / np.float32(255.0), self.pixel_range)

  def read(self, split: str, indices) -> dict:
    """{"x": float32 (n, *shape), "y": int32 (n,)} of records `indices` of a split."""
    source = self.source(split)
    images, labels = [], []
    for i in np.asarray(indices).reshape(-1):
      record = source[int(i)]
      images.append(self.preprocess(record["image"]))
      labels.append(int(record["label"]) if self.num_classes else 0)
    x = np.stack(images) if images else np.zeros((0,) + self.shape, np.float32)
    return {"x": x.astype(np.float32, copy=False), "y": np.asarray(labels, np.int32)}

  def train_iterator(self, *, seed: int, batch_size: int, draws_per_step: int = 1,
                     process_index: int = 0, process_count: int = 1,
                     state: dict | None = None) -> TfdsIterator:
    """Infinite iterator of this process's step batches; see the module docstring."""
    return TfdsIterator(self, seed=seed, batch_size=batch_size, draws_per_step=draws_per_step,
                        process_index=process_index, process_count=process_count, state=state)

  def _test_indices(self, key: jax.Array, n: int) -> np.ndarray:
    total = len(self.source("test"))
    if not 0 <= n <= total:
      raise ValueError(f"n={n} must be in [0, {total}] (the held-out images of {self.name})")
    return np.asarray(jax.random.permutation(key, total)[:n])

  def heldout(self, key: jax.Array, n: int) -> jax.Array:
    """n test images (the first n of a key-dependent permutation of the test split)."""
    return jnp.asarray(self.read("test", self._test_indices(key, n))["x"])

  def heldout_labeled(self, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """(images, int32 labels) of heldout(key, n)."""
    batch = self.read("test", self._test_indices(key, n))
    return jnp.asarray(batch["x"]), jnp.asarray(batch["y"])

  def to_unit(self, x):
    """Model-space images -> [0, 1] (clipped), for metrics and plots."""
    return pixels.to_unit(x, self.pixel_range)
