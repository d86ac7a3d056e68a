"""The trainer end to end on a tiny CFM run: logs, checkpoints, exact resume, sharding, NaN stop."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import checkpoint, logs, sampling, trainer
from experiments import run as run_lib
from tests.experiments.helpers import assert_trees_equal, tiny_config


def _final_state(workdir):
  return sampling.load(str(workdir))[1]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("cfm")
  summary = trainer.train_and_evaluate(tiny_config(), str(workdir))
  return workdir, summary


def test_run_writes_metrics_checkpoints_plot_and_eval(finished_run):
  workdir, summary = finished_run
  assert summary["status"] == "done" and summary["step"] == 20
  records = [r for r in logs.read_metrics(workdir) if "loss" in r]
  assert [r["step"] for r in records] == [5, 10, 15, 20]
  for r in records:
    assert np.isfinite(r["loss"]) and r["steps_per_sec"] > 0
  steps = sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())
  assert steps == [10, 20]
  assert json.loads((workdir / "config.json").read_text())["family"] == "flow_matching"
  assert os.path.exists(summary["plot"])
  assert json.loads((workdir / "eval.json").read_text())["w2"] == pytest.approx(summary["w2"])
  assert summary["w2_noise_floor"] > 0 and summary["nfe"] == 4 * 25  # rk4, 25 steps


def test_relaunch_of_finished_run_does_not_train_again(finished_run):
  workdir, summary = finished_run
  before = len(logs.read_metrics(workdir))
  again = trainer.train_and_evaluate(tiny_config(), str(workdir))
  assert again["step"] == 20 and again["w2"] == pytest.approx(summary["w2"])
  assert not [r for r in logs.read_metrics(workdir)[before:] if "loss" in r]


def test_resume_from_checkpoint_is_bit_exact(finished_run, tmp_path):
  workdir, _ = finished_run
  reference = _final_state(workdir)
  resumed = tmp_path / "resumed"
  shutil.copytree(workdir, resumed)
  shutil.rmtree(resumed / "checkpoints" / "20")  # as if killed between step 10 and 20
  trainer.train_and_evaluate(tiny_config(), str(resumed))
  assert_trees_equal(_final_state(resumed), reference)


def test_one_device_and_eight_devices_give_the_same_losses(tmp_path):
  assert jax.device_count() == 8
  losses = {}
  for n in (1, 8):
    wd = tmp_path / f"dev{n}"
    trainer.train_and_evaluate(tiny_config(num_devices=n, num_steps=10), str(wd))
    losses[n] = [r["loss"] for r in logs.read_metrics(wd) if "loss" in r]
    starts = [r for r in logs.read_metrics(wd) if r.get("event") == "start"]
    assert starts[0]["num_devices"] == n
  np.testing.assert_allclose(losses[1], losses[8], rtol=1e-5)


def test_fsdp_rule_shards_params_and_matches_replicated(tmp_path):
  c = tiny_config(num_steps=10, param_sharding="fsdp")
  c.model.hidden = (64, 64)
  run = trainer.build(c)
  specs = [s.spec for s in jax.tree.leaves(run.state_shardings["params"])]
  assert any("data" in tuple(spec) for spec in specs)
  trainer.train_and_evaluate(c, str(tmp_path / "fsdp"))
  c.train.param_sharding = "replicated"
  trainer.train_and_evaluate(c, str(tmp_path / "repl"))
  a = [r["loss"] for r in logs.read_metrics(tmp_path / "fsdp") if "loss" in r]
  b = [r["loss"] for r in logs.read_metrics(tmp_path / "repl") if "loss" in r]
  np.testing.assert_allclose(a, b, rtol=1e-5)


def test_non_finite_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
  bad_step = 13
  real_make_dataset = run_lib.make_dataset
  seed_key = jax.random.fold_in(jax.random.key(0), trainer.TRAIN)
  poisoned = jax.random.key_data(trainer.update_keys(seed_key, bad_step, 0)[0])

  class Poisoned:
    def __init__(self, inner):
      self.inner, self.shape = inner, inner.shape

    def sample(self, key, n):
      x = self.inner.sample(key, n)
      hit = jnp.all(jax.random.key_data(key) == poisoned)
      return jnp.where(hit, jnp.nan, x)

  monkeypatch.setattr(run_lib, "make_dataset", lambda cfg: Poisoned(real_make_dataset(cfg)))
  with pytest.raises(trainer.NonFiniteLossError, match=f"step {bad_step}.*step 10"):
    trainer.train_and_evaluate(tiny_config(), str(tmp_path))
  manager = checkpoint.make_manager(str(tmp_path), every=10, async_save=False)
  assert manager.latest_step() == 10
  manager.close()
  monkeypatch.undo()
  state = _final_state(tmp_path)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"]))


def test_sample_to_file_uses_sampler_options(finished_run, tmp_path):
  workdir, _ = finished_run
  out = tmp_path / "s.npy"
  info = sampling.sample_to_file(str(workdir), str(out), num_samples=64, seed=3,
                                 sampler="euler", num_steps=7)
  x = np.load(out)
  assert x.shape == (64, 2) and np.isfinite(x).all() and info["nfe"] == 7
  again = sampling.sample_to_file(str(workdir), str(tmp_path / "t.npy"), num_samples=64, seed=3,
                                  sampler="euler", num_steps=7)
  np.testing.assert_array_equal(np.load(tmp_path / "t.npy"), x)
  with pytest.raises(ValueError, match="num_samples"):
    sampling.sample_to_file(str(workdir), str(out), num_samples=0)
  with pytest.raises(FileNotFoundError, match="config.json"):
    sampling.sample_to_file(str(tmp_path / "nowhere"), str(out), num_samples=4)
  del again


def test_periodic_plots_and_tensorboard(tmp_path):
  c = tiny_config(plot_every=10)
  c.log.tensorboard = True
  trainer.train_and_evaluate(c, str(tmp_path))
  assert (tmp_path / "samples_0000010.png").exists() and (tmp_path / "samples_0000020.png").exists()
  events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  assert events and events[0].stat().st_size > 0
