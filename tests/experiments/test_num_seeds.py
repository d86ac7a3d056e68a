"""config.num_seeds: n replicas in one vmapped step; replica i is the run with seed + i."""

import json
import shutil

import jax
import numpy as np
import pytest

from experiments import evaluation, sampling, trainer
from tests.experiments.helpers import assert_trees_equal, tiny_config


def _config(num_seeds, seed=0, steps=12):
  c = tiny_config(num_steps=steps, checkpoint_every=6, log_every=6, num_devices=1)
  c.seed = seed
  c.num_seeds = num_seeds
  c.optim.warmup_steps = 0
  return c


def test_replica_i_matches_the_single_run_with_seed_plus_i(tmp_path):
  many = trainer.train_and_evaluate(_config(3), str(tmp_path / "many"))
  _, stacked = sampling.load(str(tmp_path / "many"))
  for i in (0, 2):
    single = trainer.train_and_evaluate(_config(1, seed=i), str(tmp_path / f"seed{i}"))
    _, state = sampling.load(str(tmp_path / f"seed{i}"))
    replica = jax.tree.map(lambda a: a[i], stacked["ema_params"])
    for a, b in zip(jax.tree.leaves(replica), jax.tree.leaves(state["ema_params"])):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert many["per_seed"]["w2"][i] == pytest.approx(single["w2"], rel=1e-4)


def test_summary_reports_mean_and_std_over_replicas(tmp_path):
  summary = trainer.train_and_evaluate(_config(3), str(tmp_path))
  on_disk = json.loads((tmp_path / "eval.json").read_text())
  assert on_disk["num_seeds"] == 3
  values = on_disk["per_seed"]["w2"]
  assert len(values) == 3 and len(set(values)) == 3  # replicas differ
  assert on_disk["w2"] == pytest.approx(np.mean(values))
  assert on_disk["w2_std"] == pytest.approx(np.std(values))
  assert summary["w2"] == on_disk["w2"]


def test_replicated_run_resumes_bit_exactly(tmp_path, monkeypatch):
  monkeypatch.setattr(evaluation, "evaluate_run", lambda run, workdir, state, compile_s: {})
  config = _config(2)
  trainer.train_and_evaluate(config, str(tmp_path / "full"))
  shutil.copytree(tmp_path / "full", tmp_path / "resumed")
  shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "12")
  trainer.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert_trees_equal(sampling.load(str(tmp_path / "resumed"))[1],
                     sampling.load(str(tmp_path / "full"))[1])


def test_state_has_a_leading_replica_axis():
  run = trainer.build(_config(4))
  state = trainer.init_state(run)
  assert state["step"].shape == (4,)
  for leaf in jax.tree.leaves(state["params"]):
    assert leaf.shape[0] == 4
  # replicas are initialised from different seeds
  kernel = max(jax.tree.leaves(state["params"]), key=lambda a: a.size)
  assert not np.allclose(kernel[0], kernel[1])
  assert trainer.current_step(state) == 0


def test_one_compile_for_all_replicas():
  run = trainer.build(_config(3))
  step = trainer.make_train_step(run)
  state = trainer.init_state(run)
  state, metrics = step(state, run.keys["train"])
  state, metrics = step(state, run.keys["train"])
  assert step._cache_size() == 1
  assert metrics["loss"].shape == (3,)


@pytest.mark.parametrize("bad", [0, -2])
def test_bad_num_seeds_is_refused_before_compiling(bad):
  c = _config(1)
  c.num_seeds = bad
  with pytest.raises(ValueError, match="num_seeds"):
    trainer.build(c)
