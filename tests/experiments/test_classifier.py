"""Digits classifier training, checkpoint format, the committed checkpoint and its launcher."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import classifier as C
from experiments import data as data_lib
from experiments import params_npz
from tests.experiments.helpers import launch


@pytest.fixture(scope="module")
def digits():
  return data_lib.make_dataset(ml_collections.ConfigDict({"name": "digits"}))


def test_committed_checkpoint_accuracy_and_size(digits):
  for suffix in (".npz", ".json"):
    assert os.path.isfile(C.DEFAULT_PATH + suffix)
  assert os.path.getsize(C.DEFAULT_PATH + ".npz") < 300_000
  clf = C.load_digits_classifier()
  assert clf.meta["test_accuracy"] >= 0.97
  # the file's weights reproduce the accuracy its metadata reports
  acc = C.accuracy(clf.logits, clf.params, digits.test, digits.test_labels)
  assert acc == pytest.approx(clf.meta["test_accuracy"], abs=1e-9)
  assert C.accuracy(clf.logits, clf.params, digits.train, digits.train_labels) >= 0.99
  features = clf.features(clf.params, jnp.asarray(digits.test[:7]))
  assert features.shape == (7, clf.meta["feature_dim"])


def test_train_save_load_round_trip(tmp_path, digits):
  out = str(tmp_path / "clf")
  kwargs = dict(seed=3, steps=100, batch_size=64, learning_rate=1e-2, channels=(8, 16),
                feature_dim=16)
  meta = C.train_digits_classifier(out_path=out, **kwargs)
  with open(out + ".json") as f:
    assert json.load(f) == meta
  assert meta["steps"] == 100 and meta["feature_dim"] == 16 and meta["channels"] == [8, 16]
  assert meta["test_accuracy"] >= 0.5                           # 100 steps: chance is 0.1
  clf = C.load_digits_classifier(out + ".npz")                  # a suffix is ignored
  assert clf.params["feature"]["kernel"].shape == (2 * 2 * 16, 16)
  assert C.accuracy(clf.logits, clf.params, digits.test, digits.test_labels) == pytest.approx(
      meta["test_accuracy"])
  # retraining with the same seed gives the same weights
  C.train_digits_classifier(out_path=out, **kwargs)
  again = C.load_digits_classifier(out)
  for a, b in zip(jax.tree.leaves(clf.params), jax.tree.leaves(again.params)):
    np.testing.assert_array_equal(a, b)


def test_load_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="metadata"):
    C.load_digits_classifier(str(tmp_path / "missing"))
  base = str(tmp_path / "broken")
  with open(C.DEFAULT_PATH + ".json") as f:
    meta = json.load(f)
  params = params_npz.load_params_npz(C.DEFAULT_PATH)
  del params["out"]["bias"]
  params_npz.save_params_npz(base, params)
  with open(base + ".json", "w") as f:
    json.dump(meta, f)
  with pytest.raises(ValueError, match="out.bias"):
    C.load_digits_classifier(base)
  with open(base + ".json", "w") as f:
    json.dump({**meta, "format": "something/v0"}, f)
  with pytest.raises(ValueError, match="format"):
    C.load_digits_classifier(base)


def test_random_shift_moves_whole_images():
  images = jax.random.uniform(jax.random.key(0), (64, 8, 8, 1))
  shifted = np.asarray(C.random_shift(jax.random.key(1), images, 1))
  padded = np.pad(np.asarray(images), ((0, 0), (1, 1), (1, 1), (0, 0)))
  offsets = set()
  for i in range(64):
    matches = [(a, b) for a in range(3) for b in range(3)
               if np.array_equal(padded[i, a:a + 8, b:b + 8], shifted[i])]
    assert matches, i
    offsets.update(matches)
  assert len(offsets) >= 8                                      # all 9 offsets appear (64 draws)
  np.testing.assert_array_equal(C.random_shift(jax.random.key(1), images, 0), images)
  with pytest.raises(ValueError, match="max_shift"):
    C.random_shift(jax.random.key(1), images, -1)


def test_bad_training_arguments():
  with pytest.raises(ValueError, match="steps"):
    C.train_digits_classifier(steps=0, out_path=None)
  with pytest.raises(ValueError, match="learning_rate"):
    C.train_digits_classifier(steps=1, learning_rate=0.0, out_path=None)


def test_launcher_writes_checkpoint(tmp_path):
  out = str(tmp_path / "launched")
  proc = launch("launch.train_classifier", f"--out={out}", "--steps=3", "--feature_dim=8")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert json.loads(proc.stdout)["steps"] == 3
  assert os.path.isfile(out + ".npz") and os.path.isfile(out + ".json")
