"""Training data: in-memory sets drawn by key inside jit, and tfds sets read on the host.

Two kinds of data set, one `make_dataset(data_config)` entry point.

In-memory (toy points, scikit-learn digits): batches are pure functions of a key,
`dataset.sample(key, n) -> (n, *shape)`, drawn inside the jitted train step from a
key derived from (seed, step), so a resumed run sees exactly the batches an
uninterrupted one would. Image sets (`ArrayDataset`) also give labels:
`sample_labeled(key, n) -> (x, y)` uses the same indices as `sample` (so
`sample(key, n) == sample_labeled(key, n)[0]`), and `heldout(key, n)` /
`heldout_labeled(key, n)` are the first n of a key-dependent permutation of the
test split. Training draws are uniform with replacement over the train split.

Host data (tfds through `tfds.data_source` + grain, no TensorFlow; see
experiments/data_tfds.py): `TfdsDataset.host_data = True` and
`train_iterator(*, seed, batch_size, draws_per_step=1, process_index=0,
process_count=1, state=None)` yields {"x": (draws_per_step, batch_size //
process_count, H, W, C) float32, "y": (draws_per_step, batch_size // process_count)
int32}, with `get_state()` for exact resume.

| name          | source                                   | shape      | classes | train / test |
|---------------|------------------------------------------|------------|---------|--------------|
| ring8, ...    | research.data.toy (2-D, infinite)        | (2,)       | 0       | - / fresh draws |
| digits        | sklearn 8x8 digits, pixel / 16           | (8, 8, 1)  | 10      | 1500 / 297   |
| digits_binary | digits thresholded at 0.5 -> {0, 1}      | (8, 8, 1)  | 10      | 1500 / 297   |
| digits16      | digits upsampled bilinearly to 16x16     | (16, 16, 1)| 10      | 1500 / 297   |
| digits32      | digits upsampled bilinearly to 32x32     | (32, 32, 1)| 10      | 1500 / 297   |
| digits_pad16  | digits zero-padded (4 px each side)      | (16, 16, 1)| 10      | 1500 / 297   |
| mnist         | tfds mnist                               | (28, 28, 1)| 10      | 60000 / 10000|
| fashion_mnist | tfds fashion_mnist                       | (28, 28, 1)| 10      | 60000 / 10000|
| cifar10       | tfds cifar10                             | (32, 32, 3)| 10      | 50000 / 10000|
| celeb_a       | tfds celeb_a, centre crop 140, resize 64 | (64, 64, 3)| 0       | 162770 / 19962 |
| us_surnames, us_first_names, tiny_shakespeare | character-level text (experiments/data_text.py) | (seq_len,) int32 tokens | 0 | by word / tfds splits |

Every set has `modality`: "points" (toy), "images" or "text" (token sequences).

The digits train split is the first 1500 images of scikit-learn's ordering, the
test split the remaining 297, for every variant. Upsampling is bilinear
(`jax.image.resize(..., "linear")`, half-pixel centres, edge weights renormalised),
so every value is a convex combination of neighbouring pixels and stays in [0, 1].

Dequantized training batches (config.data.dequantize = L >= 2, in-memory digits sets
only; 0 = off): `sample` / `sample_labeled` return y = (k + u) / L (mapped to the pixel
range), where k = round(u_pixel (L - 1)) is the pixel's grey level and u ~ U(0, 1)
(research/metrics/likelihood.py `dequantize`; the noise key is fold_in(key, 1), the
indices use key itself). The train and test arrays stay on the grid of the L levels
(a set whose pixels are not, e.g. the bilinear digits16, is refused). A density model
trained on these batches has a held-out dequantized NLL that bounds the NLL of the
discrete data (docs/likelihood.md); only families with `supports_dequantize = True`
accept the field (experiments/configuration.py refuses it for the others).

Latents (config.data.autoencoder_workdir = a finished autoencoder run, image sets):
`make_dataset` returns experiments/latent.py's LatentDataset (the scaled encoder means of
both splits, labels kept, `decode` back to this pixel range, `pixels` the pixel set)
and `dataset_info` the latent shape, read from the autoencoder's config.json
(docs/latent.md).

Pixel range (config.data.pixel_range, images only): "unit" (default) keeps
pixels in [0, 1]: x = p / 255 (digits: p / 16); "symmetric" maps them to [-1, 1]:
x = 2 u - 1, the range diffusion / flow / consistency / GAN image models train on
(Ho et al. 2020, Sec. 3.3). `dataset.to_unit(x)` maps model-space images back to
[0, 1] (clipped) for metrics and plots.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from experiments.pixels import PIXEL_RANGES, check_pixel_range, from_unit, to_unit  # noqa: F401
from research.data import toy
from research.metrics import likelihood as likelihood_lib

DIGITS_NAMES = ("digits", "digits_binary", "digits16", "digits32", "digits_pad16")
DIGITS_NUM_TRAIN = 1500
DIGITS_NUM_CLASSES = 10
TFDS_NAMES = ("mnist", "fashion_mnist", "cifar10", "celeb_a")
TEXT_NAMES = ("us_surnames", "us_first_names", "tiny_shakespeare")  # experiments/data_text.py


@dataclasses.dataclass(frozen=True)
class ToyDataset:
  """A 2-D toy distribution from research.data.toy (infinite, generated on device)."""
  name: str
  shape: tuple = (2,)
  num_classes: int = 0
  modality: str = "points"

  def sample(self, key: jax.Array, n: int) -> jax.Array:
    """n i.i.d. points, a pure function of the key (jittable with n static)."""
    return toy.sample(self.name, key, n)

  def heldout(self, key: jax.Array, n: int) -> jax.Array:
    """n fresh points (the distribution is infinite: held-out = another key)."""
    return self.sample(key, n)


def _resize(images: np.ndarray, size: int) -> np.ndarray:
  out = jax.image.resize(jnp.asarray(images), (images.shape[0], size, size, images.shape[-1]),
                         method="linear")
  return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


@functools.cache
def _digits(variant: str) -> tuple[np.ndarray, np.ndarray]:
  """(images in [0, 1], shape (1797, H, W, 1) float32; labels int32) of a digits variant."""
  from sklearn.datasets import load_digits  # ships its data: no download
  digits = load_digits()
  images = (digits.images / 16.0).astype(np.float32)[..., None]
  if variant == "digits_binary":
    images = (images >= 0.5).astype(np.float32)
  elif variant == "digits16":
    images = _resize(images, 16)
  elif variant == "digits32":
    images = _resize(images, 32)
  elif variant == "digits_pad16":
    images = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
  elif variant != "digits":
    raise ValueError(f"variant must be one of {DIGITS_NAMES}, got {variant!r}")
  return images, digits.target.astype(np.int32)


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayDataset:
  """A finite in-memory image set; batches are uniform draws (with replacement) from train.

  `train` / `test` hold images in model space (see the module docstring's pixel
  range); `num_classes` labels in [0, num_classes).
  """
  name: str
  train: np.ndarray
  test: np.ndarray
  train_labels: np.ndarray
  test_labels: np.ndarray
  pixel_range: str = "unit"
  num_classes: int = DIGITS_NUM_CLASSES
  modality: str = "images"
  dequantize: int = 0   # L >= 2: training draws are uniformly dequantized over L levels

  def __post_init__(self):
    check_pixel_range(self.pixel_range)
    if self.dequantize:
      check_on_grid(to_unit(self.train, self.pixel_range), self.dequantize, self.name)

  @property
  def shape(self) -> tuple:
    """Shape of one image, (H, W, C)."""
    return tuple(self.train.shape[1:])

  def _train_indices(self, key: jax.Array, n: int) -> jax.Array:
    return jax.random.randint(key, (n,), 0, self.train.shape[0])

  def _dequantized(self, key: jax.Array, x: jax.Array) -> jax.Array:
    """x itself, or (k + u) / L in model space with k its grey levels (module docstring)."""
    if not self.dequantize:
      return x
    levels = jnp.round(to_unit(x, self.pixel_range) * (self.dequantize - 1))
    y = likelihood_lib.dequantize(jax.random.fold_in(key, 1), levels, self.dequantize)
    return from_unit(y, self.pixel_range)

  def sample(self, key: jax.Array, n: int) -> jax.Array:
    """n training images drawn uniformly with replacement (jittable with n static);
    dequantized when self.dequantize = L > 0."""
    return self._dequantized(key, jnp.asarray(self.train)[self._train_indices(key, n)])

  def sample_labeled(self, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """(images, int32 labels) at the same indices (and noise) as sample(key, n)."""
    idx = self._train_indices(key, n)
    return (self._dequantized(key, jnp.asarray(self.train)[idx]),
            jnp.asarray(self.train_labels, jnp.int32)[idx])

  def _test_indices(self, key: jax.Array, n: int) -> jax.Array:
    if n > self.test.shape[0]:
      raise ValueError(f"n={n} exceeds the {self.test.shape[0]} held-out images of {self.name}")
    return jax.random.permutation(key, self.test.shape[0])[:n]

  def heldout(self, key: jax.Array, n: int) -> jax.Array:
    """n held-out images (the first n of a key-dependent permutation of the test split)."""
    return jnp.asarray(self.test)[self._test_indices(key, n)]

  def heldout_labeled(self, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """(images, int32 labels) of heldout(key, n)."""
    idx = self._test_indices(key, n)
    return jnp.asarray(self.test)[idx], jnp.asarray(self.test_labels, jnp.int32)[idx]

  def to_unit(self, x):
    """Model-space images -> [0, 1] (clipped), for metrics and plots."""
    return to_unit(x, self.pixel_range)


def check_on_grid(unit_images, num_levels: int, name: str) -> None:
  """ValueError naming config.data.dequantize unless every pixel in [0, 1] is k / (L - 1)."""
  scaled = np.asarray(unit_images, np.float64) * (num_levels - 1)
  off = np.abs(scaled - np.round(scaled))
  if off.size and off.max() > 1e-4:
    raise ValueError(f"config.data.dequantize={num_levels}: the pixels of {name!r} are not on "
                     f"the grid of {num_levels} levels k / {num_levels - 1} (off by up to "
                     f"{off.max() / (num_levels - 1):.3g}); dequantization needs integer "
                     f"levels (digits: 17)")


def dataset_names() -> tuple[str, ...]:
  """Every name make_dataset accepts."""
  return tuple(toy.NAMES) + DIGITS_NAMES + TFDS_NAMES + TEXT_NAMES


# Example shape of each in-memory image set (dataset_info reads it without loading).
_DIGITS_SHAPES = {"digits": (8, 8, 1), "digits_binary": (8, 8, 1), "digits16": (16, 16, 1),
                  "digits32": (32, 32, 1), "digits_pad16": (16, 16, 1)}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What config checks need to know about a data set, without building it."""
  name: str
  shape: tuple
  num_classes: int
  pixel_range: str
  latent: bool = False   # autoencoder latents of the image set (shape: the latent shape)

  @property
  def image(self) -> bool:
    return len(self.shape) == 3

  @property
  def text(self) -> bool:
    return self.name in TEXT_NAMES


def dataset_info(data_config) -> DatasetInfo:
  """Name, example shape, number of classes and pixel range of data_config (nothing is loaded).

  Raises ValueError naming config.data.name / config.data.pixel_range for a bad one;
  make_dataset(data_config) builds a set with exactly this shape and class count.
  """
  name = data_config.get("name") if hasattr(data_config, "get") else None
  pixel_range = data_config.get("pixel_range", "unit") if hasattr(data_config, "get") else None
  if pixel_range not in PIXEL_RANGES:
    raise ValueError(f"config.data.pixel_range must be one of {PIXEL_RANGES}, got {pixel_range!r}")
  if data_config.get("autoencoder_workdir", ""):   # latents of a trained autoencoder
    pixel = dataset_info(_without_autoencoder(data_config))
    if not pixel.image:
      raise ValueError(f"config.data.autoencoder_workdir needs an image set, got "
                       f"config.data.name={name!r}")
    latent = _latent_module()   # reads the autoencoder's config.json only
    return DatasetInfo(name, latent.latent_shape(data_config), pixel.num_classes, pixel_range,
                       latent=True)
  if name in toy.NAMES:
    return DatasetInfo(name, (2,), 0, pixel_range)
  if name in _DIGITS_SHAPES:
    return DatasetInfo(name, _DIGITS_SHAPES[name], DIGITS_NUM_CLASSES, pixel_range)
  if name in TFDS_NAMES:
    from experiments import data_tfds  # tfds + grain only when asked for
    spec = data_tfds.SPECS[name]
    return DatasetInfo(name, tuple(spec.shape), spec.num_classes, pixel_range)
  if name in TEXT_NAMES:
    from experiments import data_text
    return DatasetInfo(name, data_text.text_info_shape(data_config), 0, pixel_range)
  raise ValueError(f"config.data.name must be one of {dataset_names()}, got {name!r}")


def _latent_module():
  """experiments/latent.py, looked up by name like a family plug-in (experiments/families):
  it sits above this module (it restores a trained run), so a static import would be a cycle."""
  import importlib
  return importlib.import_module("experiments.latent")


def _without_autoencoder(data_config):
  """A copy of data_config with autoencoder_workdir cleared: the pixel set's own config."""
  import ml_collections
  plain = ml_collections.ConfigDict(data_config.to_dict() if hasattr(data_config, "to_dict")
                                    else dict(data_config))
  plain.autoencoder_workdir = ""
  return plain


def make_dataset(data_config):
  """The dataset named by data_config.name.

  Fields: name (see dataset_names()), pixel_range ("unit" | "symmetric", images
  only, default "unit"), autoencoder_workdir (a trained autoencoder run: the set's
  scaled latents, experiments/latent.py LatentDataset; "" = pixels), dequantize
  (in-memory digits only: L >= 2 dequantizes the
  training draws over L levels, 0 = off; module docstring), data_dir (tfds sets only;
  default tfds's own).
  Nothing is read from disk here: tfds sources open on first use.
  """
  if data_config.get("autoencoder_workdir", ""):
    latent = _latent_module()   # restores the autoencoder, encodes both splits once
    return latent.make_latent_dataset(data_config)
  name = data_config.name
  pixel_range = check_pixel_range(data_config.get("pixel_range", "unit"))
  dequantize = data_config.get("dequantize", 0)
  if dequantize and name not in DIGITS_NAMES:
    raise ValueError(f"config.data.dequantize={dequantize} needs an in-memory digits set "
                     f"{DIGITS_NAMES}, got config.data.name={name!r}")
  if name in toy.NAMES:
    return ToyDataset(name)
  if name in DIGITS_NAMES:
    images, labels = _digits(name)
    images = from_unit(images, pixel_range)
    return ArrayDataset(name, images[:DIGITS_NUM_TRAIN], images[DIGITS_NUM_TRAIN:],
                        labels[:DIGITS_NUM_TRAIN], labels[DIGITS_NUM_TRAIN:],
                        pixel_range=pixel_range, dequantize=int(dequantize))
  if name in TFDS_NAMES:
    from experiments import data_tfds  # tfds + grain only when asked for
    return data_tfds.TfdsDataset(name, pixel_range=pixel_range,
                                 data_dir=data_config.get("data_dir"))
  if name in TEXT_NAMES:
    from experiments import data_text
    return data_text.make_text_dataset(data_config)
  raise ValueError(f"config.data.name must be one of {dataset_names()}, got {name!r}")
