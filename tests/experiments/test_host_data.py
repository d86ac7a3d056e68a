"""Host-fed batches (the tfds + grain path): the iterator's state is checkpointed, resume is exact."""

import dataclasses
import shutil

import jax
import numpy as np
import pytest

from experiments import checkpoint, evaluation, sampling, trainer
from experiments import run as run_lib
from experiments.data import ToyDataset
from tests.experiments.helpers import assert_trees_equal, tiny_config


class _Iterator:
  """Deterministic host batches: batch k is a function of (seed, k) only."""

  def __init__(self, seed, batch_size, draws, shift, state):
    self.seed, self.batch_size, self.draws, self.shift = seed, batch_size, draws, shift
    self.index = 0 if state is None else state["index"]

  def __next__(self):
    rng = np.random.default_rng([self.seed, self.index])
    self.index += 1
    x = rng.normal(size=(self.draws, self.batch_size, 2)).astype(np.float32) + self.shift
    return {"x": x, "y": np.zeros((self.draws, self.batch_size), np.int32)}

  def get_state(self):
    return {"index": self.index}


@dataclasses.dataclass(frozen=True)
class _HostDataset:
  shift: float = 0.0
  host_data = True
  num_classes = 0
  shape = (2,)
  calls = []

  def train_iterator(self, *, seed, batch_size, draws_per_step, process_index, process_count,
                     state=None):
    assert process_count == 1 and process_index == 0
    self.calls.append(state)
    return _Iterator(seed, batch_size, draws_per_step, self.shift, state)

  def sample(self, key, n):  # evaluation's fresh data draws
    return ToyDataset("moons").sample(key, n)


@pytest.fixture
def host_data(monkeypatch):
  def use(shift=0.0):
    ds = _HostDataset(shift)
    monkeypatch.setattr(run_lib, "make_dataset", lambda cfg: ds)
    return ds
  monkeypatch.setattr(evaluation, "evaluate_run", lambda run, workdir, state, compile_s: {})
  return use


def _config():
  c = tiny_config(num_steps=12, checkpoint_every=6, log_every=6, num_devices=1)
  c.optim.warmup_steps = 0
  return c


def test_host_batches_resume_exactly_from_the_saved_iterator_state(tmp_path, host_data):
  ds = host_data()
  trainer.train_and_evaluate(_config(), str(tmp_path / "full"))
  shutil.copytree(tmp_path / "full", tmp_path / "resumed")
  shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "12")
  ds.calls.clear()
  trainer.train_and_evaluate(_config(), str(tmp_path / "resumed"))
  assert ds.calls == [{"index": 6}]  # the iterator restarted where checkpoint 6 left it
  assert_trees_equal(sampling.load(str(tmp_path / "resumed"))[1],
                     sampling.load(str(tmp_path / "full"))[1])


def test_iterator_state_is_saved_with_every_checkpoint(tmp_path, host_data):
  host_data()
  trainer.train_and_evaluate(_config(), str(tmp_path))
  manager = checkpoint.make_manager(str(tmp_path), every=6, async_save=False)
  try:
    assert checkpoint.restore_data_state(manager, 6) == {"index": 6}
    assert checkpoint.restore_data_state(manager, 12) == {"index": 12}
  finally:
    manager.close()


def test_training_sees_the_host_batches(tmp_path, host_data):
  host_data(0.0)
  trainer.train_and_evaluate(_config(), str(tmp_path / "a"))
  host_data(5.0)
  trainer.train_and_evaluate(_config(), str(tmp_path / "b"))
  a = jax.tree.leaves(sampling.load(str(tmp_path / "a"))[1]["params"])
  b = jax.tree.leaves(sampling.load(str(tmp_path / "b"))[1]["params"])
  assert any(not np.allclose(x, y) for x, y in zip(a, b))


def test_in_memory_checkpoints_have_no_data_state(tmp_path):
  trainer.train_and_evaluate(_config(), str(tmp_path))
  manager = checkpoint.make_manager(str(tmp_path), every=6, async_save=False)
  try:
    assert checkpoint.restore_data_state(manager) is None
  finally:
    manager.close()
