"""Image metrics on real digits: held-out vs train, noise, labels, resolutions, Inception path."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import data as data_lib
from experiments import image_metrics as M
from experiments import params_npz


def _dataset(name, **kw):
  return data_lib.make_dataset(ml_collections.ConfigDict({"name": name, **kw}))


@pytest.fixture(scope="module")
def digits():
  return _dataset("digits")


@pytest.fixture(scope="module")
def train_subset(digits):
  """297 train images (as many as the test split): k-NN metrics want equal set sizes."""
  perm = np.random.default_rng(0).permutation(digits.train.shape[0])
  return digits.train[perm[:297]]


@pytest.fixture(scope="module")
def noise_quality(digits):
  noise = np.random.default_rng(0).uniform(size=digits.test.shape).astype(np.float32)
  return M.image_quality(noise, digits.train, labels=digits.test_labels)


def test_held_out_digits_score_well(digits, train_subset, noise_quality):
  q = M.image_quality(digits.test, digits.train, labels=digits.test_labels)
  assert set(q) == {"fd", "precision", "recall", "density", "coverage", "class_accuracy"}
  assert q["class_accuracy"] >= 0.97
  assert q["fd"] < 0.1 * noise_quality["fd"]          # measured: 0.71 vs 15.3
  assert q["recall"] >= 0.85
  # precision/coverage are judged at equal set sizes (297 vs 297)
  equal = M.image_quality(digits.test, train_subset)
  assert equal["precision"] >= 0.75 and equal["recall"] >= 0.85   # measured: 0.84, 0.92
  assert equal["coverage"] >= 0.8 and equal["density"] >= 0.6     # measured: 0.91, 0.76


def test_noise_scores_badly(noise_quality):
  q = noise_quality
  assert q["fd"] > 10.0
  assert q["precision"] <= 0.4 and q["density"] <= 0.15           # measured: 0.30, 0.07
  assert q["recall"] <= 0.05 and q["coverage"] <= 0.05
  assert q["class_accuracy"] <= 0.2


def test_mode_dropping_is_seen_as_low_recall(digits, train_subset):
  low = digits.train[digits.train_labels < 5][:297]        # a model that only draws 0-4
  q = M.image_quality(low, train_subset)
  assert q["precision"] >= 0.9
  assert q["recall"] <= 0.6 and q["coverage"] <= 0.6
  assert q["fd"] > 3.0 * M.image_quality(digits.test, train_subset)["fd"]


def test_class_accuracy_uses_the_given_labels(digits):
  wrong = (digits.test_labels + 1) % 10
  q = M.image_quality(digits.test, digits.train, labels=wrong)
  assert q["class_accuracy"] <= 0.05
  with pytest.raises(ValueError, match="labels"):
    M.image_quality(digits.test, digits.train, labels=digits.test_labels[:10])


def test_fd_floor_is_below_held_out_fd(digits):
  floor = M.fd_floor(jax.random.key(0), digits.train)
  again = M.fd_floor(jax.random.key(0), digits.train)
  assert floor == again
  assert set(floor) == {"fd", "precision", "recall", "density", "coverage"}
  held_out = M.image_quality(digits.test, digits.train)
  assert floor["fd"] < held_out["fd"]                       # measured: 0.23 vs 0.71
  assert floor["precision"] >= 0.9 and floor["recall"] >= 0.9
  with pytest.raises(ValueError, match="reference"):
    M.fd_floor(jax.random.key(0), digits.train[:11], k=5)


@pytest.mark.parametrize("name, kw, options", [
    ("digits16", {}, {}),
    ("digits32", {"pixel_range": "symmetric"}, {"value_range": (-1.0, 1.0)}),
    ("digits_pad16", {}, {"fit": "center_crop"}),
])
def test_other_resolutions_and_ranges_give_the_same_metrics(digits, name, kw, options):
  base = M.image_quality(digits.test, digits.train, labels=digits.test_labels)
  ds = _dataset(name, **kw)
  q = M.image_quality(ds.test, ds.train, labels=ds.test_labels, **options)
  assert q["class_accuracy"] == base["class_accuracy"]
  assert q["fd"] == pytest.approx(base["fd"], rel=1e-3, abs=1e-3)
  # mixed resolutions: 16x16 samples against the 8x8 reference
  if name == "digits16":
    mixed = M.image_quality(ds.test, digits.train)
    assert mixed["fd"] == pytest.approx(base["fd"], rel=1e-3, abs=1e-3)


def test_to_digits_resolution_inverts_bilinear_upsampling():
  x = jax.random.uniform(jax.random.key(0), (3, 8, 8, 1))
  for size in (12, 16, 32):
    up = jax.image.resize(x, (3, size, size, 1), "linear")
    np.testing.assert_allclose(M.to_digits_resolution(up), x, atol=2e-5)
  np.testing.assert_array_equal(M.to_digits_resolution(x), x)
  np.testing.assert_allclose(M.to_digits_resolution(2 * x - 1, value_range=(-1, 1)), x, atol=1e-6)
  assert float(M.to_digits_resolution(x + 5.0).min()) == 1.0          # clipped to [0, 1]


def test_to_digits_resolution_bad_input():
  with pytest.raises(ValueError, match="images"):
    M.to_digits_resolution(jnp.zeros((2, 8, 16, 1)))
  with pytest.raises(ValueError, match="images"):
    M.to_digits_resolution(jnp.zeros((2, 8, 8, 3)))
  with pytest.raises(ValueError, match="at least 8x8"):
    M.to_digits_resolution(jnp.zeros((2, 4, 4, 1)))
  with pytest.raises(ValueError, match="value_range"):
    M.to_digits_resolution(jnp.zeros((2, 8, 8, 1)), value_range=(1.0, 0.0))
  with pytest.raises(ValueError, match="fit"):
    M.to_digits_resolution(jnp.zeros((2, 16, 16, 1)), fit="nearest")


# ---------------------------------------------------------------------------
# Inception FID with random weights (no real weights can be downloaded here).


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
  from research.nets import inception
  from tests.research.nets.test_inception import _random_params
  shapes, _ = inception.abstract_inception()
  params = _random_params(shapes, seed=1)
  path = params_npz.save_params_npz(str(tmp_path_factory.mktemp("inception") / "fid"), params)
  return path, params


def test_inception_loader_round_trip_and_fid(inception_file):
  from research.nets import inception
  path, params = inception_file
  loaded, features_fn = M.load_inception_params(path)
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  x = jax.random.uniform(jax.random.key(0), (5, 75, 75, 3))
  _, reference_fn = inception.abstract_inception()
  expected = jax.jit(reference_fn, static_argnames="resize")(params, x, resize=False)
  got = M.inception_features(x, path, batch_size=3, resize=False)   # 2 batches, last one padded
  assert got.shape == (5, 2048)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
  assert M.inception_fid(x, x, path, batch_size=3, resize=False) == pytest.approx(0.0, abs=1e-3)
  y = jnp.clip(x + 0.3 * jax.random.normal(jax.random.key(1), x.shape), 0.0, 1.0)
  assert M.inception_fid(x, y, path, batch_size=3, resize=False) > 1e-3


def test_inception_loader_errors(tmp_path, inception_file):
  with pytest.raises(FileNotFoundError, match="convert_pytorch_fid_weights"):
    M.load_inception_params(str(tmp_path / "nothing.npz"))
  _, params = inception_file
  broken = dict(params)
  broken["Mixed_7c"] = dict(broken["Mixed_7c"])
  del broken["Mixed_7c"]["branch_pool"]
  path = params_npz.save_params_npz(str(tmp_path / "broken"), broken)
  with pytest.raises(ValueError, match="Mixed_7c.branch_pool"):
    M.load_inception_params(path)
  with pytest.raises(ValueError, match="images"):
    M.inception_features(np.zeros((2, 75, 75, 2)), inception_file[0])


def test_convert_pytorch_fid_weights(tmp_path, inception_file):
  torch = pytest.importorskip("torch")
  from tests.research.nets.test_inception import _to_torch_layout
  _, params = inception_file
  state = {k: torch.from_numpy(np.ascontiguousarray(v))
           for k, v in _to_torch_layout(params).items()}
  torch.save(state, str(tmp_path / "pt_inception.pth"))
  out = M.convert_pytorch_fid_weights(str(tmp_path / "pt_inception.pth"), str(tmp_path / "conv"))
  converted, _ = M.load_inception_params(out)
  for a, b in zip(jax.tree.leaves(converted), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(FileNotFoundError):
    M.convert_pytorch_fid_weights(str(tmp_path / "missing.pth"), str(tmp_path / "x"))
