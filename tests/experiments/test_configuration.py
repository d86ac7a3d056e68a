"""Config errors are reported (ValueError naming the field) before anything compiles."""

import time

import pytest

from configs import cfm_toy, common, default
from experiments import configuration, trainer
from tests.experiments.helpers import launch, tiny_config


def test_default_config_is_cfm_on_moons():
  c = default.get_config()
  configuration.validate(c)
  assert c.family == "flow_matching" and c.data.name == "moons"


def test_cfm_toy_arguments():
  c = cfm_toy.get_config("dataset=ring8,coupling=ot,sigma=0.1,steps=7")
  assert (c.data.name, c.flow.coupling, c.flow.sigma, c.train.num_steps) == ("ring8", "ot", 0.1, 7)
  with pytest.raises(ValueError, match="unknown config argument 'colour'"):
    cfm_toy.get_config("colour=red")
  with pytest.raises(ValueError, match="key=value"):
    common.parse_arg("dataset")


@pytest.mark.parametrize("field, value, match", [
    ("optim.lr", -1.0, "config.optim.lr"),
    ("optim.name", "adagrad2", "config.optim.name"),
    ("optim.schedule", "wiggly", "config.optim.schedule"),
    ("train.num_steps", 0, "config.train.num_steps"),
    ("train.batch_size", 100, "config.train.batch_size=100 must be divisible"),
    ("train.log_every", 0, "config.train.log_every"),
    ("train.param_sharding", "zero9", "config.train.param_sharding"),
    ("ema_decay", 1.0, "config.ema_decay"),
    ("data.name", "mnist_on_mars", "config.data.name"),
    ("family", "autoregressive_llm", "config.family"),
    ("flow.path", "zigzag", "config.flow.path"),
    ("flow.coupling", "random", "config.flow.coupling"),
    ("flow.sigma", -0.1, "config.flow.sigma"),
    ("sample.sampler", "rk45", "config.sample.sampler"),
])
def test_bad_values_raise_before_compiling(field, value, match):
  c = tiny_config()
  section, _, name = field.rpartition(".")
  (c[section] if section else c)[name] = value
  t0 = time.perf_counter()
  with pytest.raises(ValueError, match=match):
    trainer.build(c)
  assert time.perf_counter() - t0 < 5.0  # nothing was compiled


def test_launcher_reports_config_error_and_writes_nothing(tmp_path):
  workdir = tmp_path / "run"
  proc = launch("launch.train", "--config=configs/cfm_toy.py:runlocal=true",
                f"--workdir={workdir}", "--config.optim.lr=-3")
  assert proc.returncode != 0
  assert "config.optim.lr" in proc.stderr
  assert not (workdir / "checkpoints").exists()


def test_locked_config_rejects_unknown_override(tmp_path):
  proc = launch("launch.train", "--config=configs/cfm_toy.py:runlocal=true",
                f"--workdir={tmp_path}", "--config.optim.learning_rte=1")
  assert proc.returncode != 0
  assert "learning_rte" in proc.stderr
