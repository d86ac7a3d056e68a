"""Datasets: toy sets and scikit-learn's digits, deterministic per key."""

import jax
import ml_collections
import numpy as np
import pytest

from experiments import data


def _make(name):
  return data.make_dataset(ml_collections.ConfigDict({"name": name}))


def test_toy_dataset_is_a_function_of_the_key():
  ds = _make("ring8")
  a = jax.jit(ds.sample, static_argnums=1)(jax.random.key(0), 64)
  np.testing.assert_allclose(a, ds.sample(jax.random.key(0), 64), atol=1e-6)
  assert a.shape == (64, 2) and not np.allclose(a, ds.sample(jax.random.key(1), 64))


@pytest.mark.parametrize("name", ["digits", "digits_binary"])
def test_digits_splits_ranges_and_sampling(name):
  ds = _make(name)
  assert ds.shape == (8, 8, 1)
  assert ds.train.shape == (1500, 8, 8, 1) and ds.test.shape == (297, 8, 8, 1)
  assert ds.train.min() == 0.0 and ds.train.max() == 1.0
  if name == "digits_binary":
    assert set(np.unique(ds.train)) == {0.0, 1.0}
  assert set(np.unique(ds.train_labels)) == set(range(10))
  x = jax.jit(ds.sample, static_argnums=1)(jax.random.key(3), 32)
  assert x.shape == (32, 8, 8, 1)
  # every sampled image is a training image (none from the held-out split)
  flat_train = {img.tobytes() for img in ds.train}
  assert all(np.asarray(img).tobytes() in flat_train for img in x)
  held = ds.heldout(jax.random.key(0), 297)
  assert sorted(map(bytes, np.asarray(held).reshape(297, -1))) == sorted(map(bytes, ds.test.reshape(297, -1)))
  with pytest.raises(ValueError, match="n=298"):
    ds.heldout(jax.random.key(0), 298)


def test_unknown_dataset_lists_valid_names():
  with pytest.raises(ValueError, match="digits_binary"):
    _make("imagenet")


# --- labels, pixel ranges and the digits variants (issue 6) ---------------------

DIGITS_VARIANTS = {"digits": (8, 8, 1), "digits_binary": (8, 8, 1), "digits16": (16, 16, 1),
                   "digits32": (32, 32, 1), "digits_pad16": (16, 16, 1)}


def _make_cfg(**fields):
  return data.make_dataset(ml_collections.ConfigDict(fields))


def _bilinear_reference(images, size):
  """Separable bilinear upsampling, half-pixel centres, edges clamped (numpy, float64)."""
  n = images.shape[1]
  coords = (np.arange(size) + 0.5) * n / size - 0.5
  lo = np.clip(np.floor(coords).astype(int), 0, n - 1)
  hi = np.clip(lo + 1, 0, n - 1)
  w = np.clip(coords - np.floor(coords), 0.0, 1.0)
  w = np.where(coords < 0, 0.0, w)
  rows = images[:, lo] * (1 - w)[None, :, None, None] + images[:, hi] * w[None, :, None, None]
  return rows[:, :, lo] * (1 - w)[None, None, :, None] + rows[:, :, hi] * w[None, None, :, None]


def test_digits_is_bit_identical_to_the_original_definition():
  from sklearn.datasets import load_digits
  ds = _make("digits")
  images = (load_digits().images / 16.0).astype(np.float32)[..., None]
  np.testing.assert_array_equal(ds.train, images[:1500])
  np.testing.assert_array_equal(ds.test, images[1500:])
  key = jax.random.key(7)
  expected = images[:1500][np.asarray(jax.random.randint(key, (50,), 0, 1500))]
  np.testing.assert_array_equal(ds.sample(key, 50), expected)
  assert ds.pixel_range == "unit" and ds.num_classes == 10


@pytest.mark.parametrize("name", sorted(DIGITS_VARIANTS))
def test_digits_variants_shapes_ranges_labels_and_split(name):
  ds = _make(name)
  base = _make("digits")
  assert ds.shape == DIGITS_VARIANTS[name] and ds.num_classes == 10
  assert ds.train.shape[0] == 1500 and ds.test.shape[0] == 297
  assert ds.train.dtype == np.float32 and ds.train.min() >= 0.0 and ds.train.max() <= 1.0
  np.testing.assert_array_equal(ds.train_labels, base.train_labels)
  np.testing.assert_array_equal(ds.test_labels, base.test_labels)
  assert ds.train_labels.dtype == np.int32


def test_digits_pad16_is_centred_zero_padding():
  ds, base = _make("digits_pad16"), _make("digits")
  np.testing.assert_array_equal(ds.train[:, 4:12, 4:12], base.train)
  inner = np.zeros((16, 16), bool)
  inner[4:12, 4:12] = True
  assert np.all(ds.train[:, ~inner] == 0.0) and np.all(ds.test[:, ~inner] == 0.0)


@pytest.mark.parametrize("name,size", [("digits16", 16), ("digits32", 32)])
def test_digits_upsampling_matches_bilinear_reference(name, size):
  ds, base = _make(name), _make("digits")
  ref = _bilinear_reference(base.test.astype(np.float64), size)
  np.testing.assert_allclose(ds.test, ref, atol=1e-5)
  # 2x bilinear: an interior output pixel is 3/4 of its nearest input pixel + 1/4 of the next
  if size == 16:
    x = base.test[:, :, :, 0]
    np.testing.assert_allclose(ds.test[:, 5, 5, 0], 0.75 * (0.75 * x[:, 2, 2] + 0.25 * x[:, 3, 2])
                               + 0.25 * (0.75 * x[:, 2, 3] + 0.25 * x[:, 3, 3]), atol=1e-6)


@pytest.mark.parametrize("name", sorted(DIGITS_VARIANTS))
def test_sample_labeled_uses_the_same_indices_as_sample(name):
  ds = _make(name)
  key = jax.random.key(11)
  x, y = jax.jit(ds.sample_labeled, static_argnums=1)(key, 64)
  np.testing.assert_array_equal(x, jax.jit(ds.sample, static_argnums=1)(key, 64))
  x, y = np.asarray(x), np.asarray(y)
  assert x.shape == (64,) + ds.shape and y.shape == (64,) and y.dtype == np.int32
  # each (image, label) pair is a (train image, its label) pair
  lookup = {}
  for img, lab in zip(ds.train, ds.train_labels):
    lookup.setdefault(img.tobytes(), set()).add(int(lab))
  assert all(int(l) in lookup[i.tobytes()] for i, l in zip(x, y))
  xh, yh = ds.heldout_labeled(jax.random.key(2), 40)
  np.testing.assert_array_equal(xh, ds.heldout(jax.random.key(2), 40))
  xh, yh = np.asarray(xh), np.asarray(yh)
  test_lookup = {}
  for img, lab in zip(ds.test, ds.test_labels):
    test_lookup.setdefault(img.tobytes(), set()).add(int(lab))
  assert all(int(l) in test_lookup[i.tobytes()] for i, l in zip(xh, yh))
  with pytest.raises(ValueError, match="n=298"):
    ds.heldout_labeled(jax.random.key(0), 298)


@pytest.mark.parametrize("name", ["digits", "digits_binary", "digits32"])
def test_symmetric_pixel_range_and_to_unit(name):
  unit = _make_cfg(name=name, pixel_range="unit")
  sym = _make_cfg(name=name, pixel_range="symmetric")
  assert sym.pixel_range == "symmetric" and sym.shape == unit.shape
  assert sym.train.min() == -1.0 and sym.train.max() == 1.0
  np.testing.assert_allclose(sym.train, 2.0 * unit.train - 1.0, atol=1e-7)
  key = jax.random.key(5)
  np.testing.assert_allclose(sym.to_unit(sym.sample(key, 16)), unit.sample(key, 16), atol=1e-6)
  np.testing.assert_array_equal(unit.to_unit(unit.sample(key, 16)), unit.sample(key, 16))
  # to_unit clips what a model overshoots
  out = np.asarray(sym.to_unit(np.array([-3.0, -1.0, 0.0, 1.0, 3.0], np.float32)))
  np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])
  assert np.asarray(jax.jit(sym.to_unit)(np.float32(0.0))) == 0.5


def test_toy_dataset_has_no_classes():
  assert _make("ring8").num_classes == 0


def test_bad_pixel_range_is_refused():
  with pytest.raises(ValueError, match="pixel_range"):
    _make_cfg(name="digits", pixel_range="zero_one")
  with pytest.raises(ValueError, match="pixel_range"):
    data.to_unit(np.zeros(3), "centered")


def test_dataset_names_lists_every_set():
  names = data.dataset_names()
  for name in ("ring8", *DIGITS_VARIANTS, "mnist", "fashion_mnist", "cifar10", "celeb_a"):
    assert name in names
  with pytest.raises(ValueError, match="celeb_a"):
    _make("imagenet")


@pytest.mark.parametrize("name", data.dataset_names())
def test_dataset_info_matches_the_built_dataset_without_loading(name):
  config = ml_collections.ConfigDict({"name": name})
  info = data.dataset_info(config)
  assert info.name == name and info.pixel_range == "unit"
  if name in data.TFDS_NAMES:
    from experiments import data_tfds
    assert tuple(data_tfds.SPECS) == data.TFDS_NAMES
    ds = data_tfds.TfdsDataset(name)   # opens nothing until read
  elif name == "tiny_shakespeare":     # a tfds text stream: read here from mock records
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=1, policy=tfds.testing.MockPolicy.USE_CODE):
      ds = data.make_dataset(ml_collections.ConfigDict({"name": name, "seq_len": 8}))
    info = data.dataset_info(ml_collections.ConfigDict({"name": name, "seq_len": 8}))
  else:
    ds = data.make_dataset(config)
  assert info.shape == tuple(ds.shape) and info.num_classes == int(getattr(ds, "num_classes", 0))


def test_dataset_info_names_the_bad_field():
  with pytest.raises(ValueError, match="config.data.name"):
    data.dataset_info(ml_collections.ConfigDict({"name": "mnist_on_mars"}))
  with pytest.raises(ValueError, match="config.data.pixel_range"):
    data.dataset_info(ml_collections.ConfigDict({"name": "digits", "pixel_range": "centered"}))
