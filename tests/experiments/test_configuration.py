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


def test_warmup_longer_than_the_run_is_clipped_with_a_warning(monkeypatch):
  from experiments import optim
  warnings = []
  monkeypatch.setattr(configuration.logging, "warning", lambda msg, *a: warnings.append(msg % a))
  c = default.get_config()
  c.train.num_steps = 30                      # the default warmup is 200 steps
  configuration.validate(c)
  assert len(warnings) == 1 and "config.optim.warmup_steps=200" in warnings[0]
  assert "clipped to 29" in warnings[0]
  assert optim.effective_warmup(c.optim, 30) == 29
  schedule = optim.learning_rate(c.optim, 30)
  assert float(schedule(0)) == 0.0 and float(schedule(29)) == pytest.approx(c.optim.lr)
  for n in (1, 2):                            # every N >= 1 gives a usable schedule
    c.train.num_steps = n
    configuration.validate(c)
    assert all(float(optim.learning_rate(c.optim, n)(s)) >= 0 for s in range(n))
  warnings.clear()
  c.train.num_steps = 1000                    # a warmup shorter than the run: no warning
  configuration.validate(c)
  assert warnings == []


def test_a_one_step_run_of_the_default_config_trains(tmp_path):
  c = tiny_config(num_steps=1, log_every=1, checkpoint_every=1)
  c.optim.warmup_steps = 50
  summary = trainer.train_and_evaluate(c, str(tmp_path))
  assert summary["status"] == "done" and summary["step"] == 1


@pytest.mark.parametrize("value", [0, -1])
def test_eval_num_samples_must_be_a_positive_int(value):
  c = tiny_config()
  c.eval.num_samples = value
  with pytest.raises(ValueError, match="config.eval.num_samples"):
    configuration.validate(c)


@pytest.mark.parametrize("name", ["default", "cfm_toy", "cfm_digits", "ddpm_toy", "ddpm_digits",
                                  "consistency_toy", "consistency_digits", "gan_toy", "wgan_gp_toy",
                                  "wgan_gp_digits", "vae_toy", "vae_digits", "vae_conv_digits"])
def test_in_memory_configs_validate_with_a_short_run(name):
  import importlib
  c = importlib.import_module(f"configs.{name}").get_config()
  c.train.num_steps = 3      # any N >= 1 is accepted: a longer warmup is clipped
  configuration.validate(c)
