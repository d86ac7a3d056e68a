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
