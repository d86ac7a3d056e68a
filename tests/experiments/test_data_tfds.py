"""tfds + grain host data on `tfds.testing.mock_data` (random records, no TensorFlow).

mock_data with MockPolicy.USE_CODE builds the features from the dataset class
and serves `tfds.data_source` from random examples (record i is a fixed function
of i; every split has num_examples records and the same contents).
"""

import json
import sys

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import data, data_tfds

NUM_EXAMPLES = 24
SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3),
          "celeb_a": (64, 64, 3)}


@pytest.fixture(autouse=True)
def mocked():
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES, policy=tfds.testing.MockPolicy.USE_CODE):
    yield


def _make(name, **fields):
  return data.make_dataset(ml_collections.ConfigDict({"name": name, **fields}))


def _take(it, n):
  return [next(it) for _ in range(n)]


def _ids(x):
  """One bytes key per image of a (..., H, W, C) batch (mock images are random: unique)."""
  x = np.asarray(x)
  return [img.tobytes() for img in x.reshape((-1,) + x.shape[-3:])]


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_shapes_ranges_and_labels(name):
  ds = _make(name)
  assert ds.host_data and ds.name == name and ds.shape == SHAPES[name]
  assert ds.num_classes == (0 if name == "celeb_a" else 10) and ds.pixel_range == "unit"
  it = ds.train_iterator(seed=0, batch_size=6, draws_per_step=2)
  batch = next(it)
  it.close()
  assert set(batch) == {"x", "y"}
  assert batch["x"].shape == (2, 6) + SHAPES[name] and batch["x"].dtype == np.float32
  assert batch["y"].shape == (2, 6) and batch["y"].dtype == np.int32
  assert batch["x"].min() >= 0.0 and batch["x"].max() <= 1.0 and batch["x"].std() > 0.05
  if name == "celeb_a":
    assert np.all(batch["y"] == 0)
  else:
    assert batch["y"].min() >= 0 and batch["y"].max() < 10
  x, y = ds.heldout_labeled(jax.random.key(0), 5)
  assert x.shape == (5,) + SHAPES[name] and y.shape == (5,) and y.dtype == np.int32
  np.testing.assert_array_equal(ds.heldout(jax.random.key(0), 5), x)
  assert "tensorflow" not in sys.modules


@pytest.mark.parametrize("name", ["mnist", "celeb_a"])
def test_symmetric_pixel_range_is_two_u_minus_one(name):
  unit, sym = _make(name), _make(name, pixel_range="symmetric")
  a = next(iter(unit.train_iterator(seed=3, batch_size=4)))["x"]
  b = next(iter(sym.train_iterator(seed=3, batch_size=4)))["x"]
  assert b.min() >= -1.0 and b.max() <= 1.0 and b.min() < -0.1
  np.testing.assert_allclose(b, 2.0 * a - 1.0, atol=1e-6)
  np.testing.assert_allclose(sym.to_unit(b), a, atol=1e-6)
  np.testing.assert_allclose(sym.to_unit(sym.heldout(jax.random.key(1), 3)),
                             unit.heldout(jax.random.key(1), 3), atol=1e-6)


def test_labels_are_those_of_the_records():
  ds = _make("cifar10")
  source = tfds.data_source("cifar10", split="train")
  truth = {ds.preprocess(source[i]["image"]).tobytes(): int(source[i]["label"])
           for i in range(NUM_EXAMPLES)}
  batch = next(iter(ds.train_iterator(seed=1, batch_size=8, draws_per_step=3)))
  assert [truth[k] for k in _ids(batch["x"])] == batch["y"].reshape(-1).tolist()


def test_every_epoch_is_a_new_reproducible_permutation():
  ds = _make("mnist")
  batch_size, per_epoch = 8, NUM_EXAMPLES // 8
  all_records = set(_ids(ds.heldout(jax.random.key(0), NUM_EXAMPLES)))  # mock: test == train
  stream = [k for b in _take(ds.train_iterator(seed=5, batch_size=batch_size), 3 * per_epoch)
            for k in _ids(b["x"])]
  epochs = [stream[e * NUM_EXAMPLES:(e + 1) * NUM_EXAMPLES] for e in range(3)]
  for epoch in epochs:  # each epoch visits every record exactly once
    assert len(set(epoch)) == NUM_EXAMPLES and set(epoch) == all_records
  assert epochs[0] != epochs[1] and epochs[1] != epochs[2]
  again = [k for b in _take(ds.train_iterator(seed=5, batch_size=batch_size), 3 * per_epoch)
           for k in _ids(b["x"])]
  assert again == stream
  other = [k for b in _take(ds.train_iterator(seed=6, batch_size=batch_size), per_epoch)
           for k in _ids(b["x"])]
  assert other != epochs[0]


def test_draws_per_step_only_regroups_the_stream():
  ds = _make("fashion_mnist")
  one = _take(ds.train_iterator(seed=2, batch_size=4), 6)
  three = _take(ds.train_iterator(seed=2, batch_size=4, draws_per_step=3), 2)
  np.testing.assert_array_equal(np.stack([b["x"][0] for b in one]),
                                np.concatenate([b["x"] for b in three]))
  np.testing.assert_array_equal(np.stack([b["y"][0] for b in one]),
                                np.concatenate([b["y"] for b in three]))


@pytest.mark.parametrize("draws_per_step", [1, 2])
def test_processes_read_disjoint_slices_that_make_the_global_batch(draws_per_step):
  ds = _make("cifar10")
  kw = dict(seed=4, batch_size=8, draws_per_step=draws_per_step)
  whole = _take(ds.train_iterator(**kw), 3)
  parts = [_take(ds.train_iterator(**kw, process_index=p, process_count=2), 3) for p in range(2)]
  for step in range(3):
    x0, x1 = parts[0][step]["x"], parts[1][step]["x"]
    assert x0.shape == (draws_per_step, 4, 32, 32, 3)
    for d in range(draws_per_step):  # within a global batch (8 | 24: none straddles epochs)
      assert not set(_ids(x0[d])) & set(_ids(x1[d]))
    for k in ("x", "y"):  # process slices, concatenated in process order, = the global batch
      np.testing.assert_array_equal(
          np.concatenate([parts[0][step][k], parts[1][step][k]], axis=1), whole[step][k])


@pytest.mark.parametrize("process_count,draws_per_step", [(1, 1), (2, 2)])
def test_resume_from_state_gives_the_uninterrupted_batches(process_count, draws_per_step):
  ds = _make("mnist")
  kw = dict(seed=9, batch_size=6, draws_per_step=draws_per_step, process_index=process_count - 1,
            process_count=process_count)
  it = ds.train_iterator(**kw)
  _take(it, 5)
  state = json.loads(json.dumps(it.get_state()))  # what the checkpoint stores
  assert state["global_batches"] == 5 * draws_per_step
  assert state["epoch"] == 5 * draws_per_step * 6 // NUM_EXAMPLES
  expected = _take(it, 3)
  it.close()
  resumed = ds.train_iterator(**kw, state=state)
  got = _take(resumed, 3)
  assert resumed.get_state()["global_batches"] == 8 * draws_per_step
  for a, b in zip(expected, got):
    np.testing.assert_array_equal(a["x"], b["x"])
    np.testing.assert_array_equal(a["y"], b["y"])
  # the state counts global batches: a run resumed on another number of processes continues too
  if process_count == 2:
    single = ds.train_iterator(seed=9, batch_size=6, draws_per_step=draws_per_step, state=state)
    np.testing.assert_array_equal(next(single)["x"][:, 3:], expected[0]["x"])


def test_state_from_another_run_is_refused():
  ds = _make("mnist")
  it = ds.train_iterator(seed=1, batch_size=4, draws_per_step=2)
  next(it)
  state = it.get_state()
  with pytest.raises(ValueError, match="seed"):
    ds.train_iterator(seed=2, batch_size=4, draws_per_step=2, state=state)
  with pytest.raises(ValueError, match="batch_size"):
    ds.train_iterator(seed=1, batch_size=8, draws_per_step=2, state=state)
  with pytest.raises(ValueError, match="dataset"):
    _make("cifar10").train_iterator(seed=1, batch_size=4, draws_per_step=2, state=state)
  with pytest.raises(ValueError, match="draws_per_step"):
    ds.train_iterator(seed=1, batch_size=4, draws_per_step=3, state=state)
  with pytest.raises(ValueError, match="state"):
    ds.train_iterator(seed=1, batch_size=4, state={"step": 3})


def test_bad_arguments_are_refused():
  ds = _make("mnist")
  with pytest.raises(ValueError, match="batch_size=6 must be divisible by process_count=4"):
    ds.train_iterator(seed=0, batch_size=6, process_count=4)
  with pytest.raises(ValueError, match="process_index"):
    ds.train_iterator(seed=0, batch_size=8, process_index=2, process_count=2)
  with pytest.raises(ValueError, match="seed"):
    ds.train_iterator(seed=-1, batch_size=8)
  with pytest.raises(ValueError, match="draws_per_step"):
    ds.train_iterator(seed=0, batch_size=8, draws_per_step=0)
  with pytest.raises(ValueError, match="batch_size"):
    ds.train_iterator(seed=0, batch_size=0)
  with pytest.raises(ValueError, match="n=25"):
    ds.heldout(jax.random.key(0), NUM_EXAMPLES + 1)
  with pytest.raises(ValueError, match="pixel_range"):
    _make("cifar10", pixel_range="centred")
  with pytest.raises(ValueError, match="name"):
    data_tfds.TfdsDataset("imagenet")
  with pytest.raises(ValueError, match="mnist"):
    _make("imagenet")
  with pytest.raises(ValueError, match="split"):
    ds.source("validation")


def test_celeb_a_centre_crop_and_resize():
  # a 218 x 178 image that is 200 exactly on the centred 140 x 140 window, 0 elsewhere
  image = np.zeros((218, 178, 3), np.uint8)
  image[39:179, 19:159] = 200
  out = data_tfds.centre_crop_resize(image, 140, 64)
  assert out.shape == (64, 64, 3) and out.dtype == np.uint8 and np.all(out == 200)
  shifted = np.zeros_like(image)
  shifted[40:180, 19:159] = 200  # one row off: the crop must see the zero row
  assert data_tfds.centre_crop_resize(shifted, 140, 64).min() < 200
  # antialiased: a 1-pixel checkerboard shrunk 140 -> 64 averages to grey, not aliasing
  board = np.zeros((140, 140, 1), np.uint8)
  board[::2, ::2] = board[1::2, 1::2] = 255
  small = data_tfds.centre_crop_resize(board, 140, 64).astype(float)
  assert abs(small[2:-2, 2:-2].mean() - 127.5) < 3 and small[2:-2, 2:-2].std() < 20
  with pytest.raises(ValueError, match="crop=300"):
    data_tfds.centre_crop_resize(image, 300, 64)
  ds = _make("celeb_a")
  record = tfds.data_source("celeb_a", split="train")[0]["image"]
  assert record.shape == (218, 178, 3)
  np.testing.assert_allclose(ds.preprocess(record),
                             data_tfds.centre_crop_resize(record, 140, 64) / 255.0, atol=1e-7)
