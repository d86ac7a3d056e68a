"""Multi-phase train steps: separate optimizers, repeats, frozen groups and after_step."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import families, logs, trainer
from tests.experiments.helpers import tiny_config


class TwoPlayer:
  """params {"a", "b", "frozen"}; phase "a" pulls a to 1 (3 times), phase "b" pulls b to -1."""

  @staticmethod
  def check_config(config):
    del config

  name, conditional, num_classes, data_shape = "two_player", False, 0, (2,)

  def __init__(self, config, dataset):
    del config, dataset

  def init(self, key):
    del key
    return {"a": jnp.zeros(()), "b": jnp.zeros(()), "frozen": jnp.zeros(())}

  def _loss_a(self, params, batch, key, step):
    del batch, key, step
    return 0.5 * (params["a"] - 1.0) ** 2 + 0.0 * params["b"], {}

  def _loss_b(self, params, batch, key, step):
    del batch, key, step
    return 0.5 * (params["b"] + 1.0) ** 2 + params["a"] * params["b"] * 0.0, {}

  def phases(self):
    return [trainer.Phase("a", self._loss_a, group="a", optim="optim", repeats=3),
            trainer.Phase("b", self._loss_b, group="b", optim="optim_b")]

  def after_step(self, params, step):
    return {**params, "frozen": params["frozen"] + 1.0 + 0.0 * step}

  loss = _loss_b

  def check_request(self, request, n=None):
    del request, n

  def sample(self, params, key, n, request=None):
    del key, request
    return jnp.zeros((n, 2)) + params["a"], {}


@pytest.fixture
def two_player(monkeypatch):
  monkeypatch.setitem(families._FAMILIES, "two_player", TwoPlayer)
  c = tiny_config(num_steps=2, log_every=1, checkpoint_every=1)
  c.family = "two_player"
  c.ema_decay = 0.0
  c.optim = ml_collections.ConfigDict({"name": "sgd", "lr": 0.5, "grad_clip": 0.0})
  c.optim_b = ml_collections.ConfigDict({"name": "sgd", "lr": 0.25, "grad_clip": 0.0})
  return c


def test_each_phase_updates_only_its_group_with_its_optimizer(two_player):
  run = trainer.build(two_player)
  state = trainer.init_state(run)
  step = trainer.make_train_step(run)
  state, metrics = step(state, run.keys["train"])
  a, b = 0.0, 0.0
  for _ in range(3):                 # a: three SGD steps of lr 0.5 on 0.5 (a - 1)^2
    a -= 0.5 * (a - 1.0)
  b -= 0.25 * (b + 1.0)              # b: one step of lr 0.25
  np.testing.assert_allclose(state["params"]["a"], a, rtol=1e-6)
  np.testing.assert_allclose(state["params"]["b"], b, rtol=1e-6)
  assert float(state["params"]["frozen"]) == 1.0       # only after_step touches it
  assert set(state["opt_state"]) == {"a", "b"}
  assert {"a/loss", "b/loss", "loss", "lr"} <= set(metrics)
  np.testing.assert_allclose(metrics["loss"], metrics["b/loss"])


def test_two_phase_run_trains_logs_and_validates_every_optimizer(two_player, tmp_path):
  trainer.train_and_evaluate(two_player, str(tmp_path))
  rows = [r for r in logs.read_metrics(tmp_path) if "loss" in r]
  assert [r["step"] for r in rows] == [1, 2] and "a/grad_norm" in rows[0]
  two_player.optim_b.lr = 0.0
  with pytest.raises(ValueError, match="config.optim_b.lr"):
    trainer.build(two_player)


class Projected(TwoPlayer):
  """Phase "a" (3 repeats) projects a onto [-0.6, 0.6] after every update."""

  def phases(self):
    clip = lambda a: jnp.clip(a, -0.6, 0.6)  # noqa: E731
    return [trainer.Phase("a", self._loss_a, group="a", optim="optim", repeats=3, project=clip),
            trainer.Phase("b", self._loss_b, group="b", optim="optim_b")]


def test_phase_project_runs_after_every_update_of_its_phase(two_player, monkeypatch):
  monkeypatch.setitem(families._FAMILIES, "two_player", Projected)
  run = trainer.build(two_player)
  state, _ = trainer.make_train_step(run)(trainer.init_state(run), run.keys["train"])
  a = 0.0
  for _ in range(3):                 # clip after each update: 0.5 -> 0.75 -> 0.6 -> 0.8 -> 0.6
    a = min(a - 0.5 * (a - 1.0), 0.6)
  np.testing.assert_allclose(state["params"]["a"], a, rtol=1e-6)
  assert a == 0.6 and float(state["params"]["b"]) == -0.25   # b's phase has no projection
