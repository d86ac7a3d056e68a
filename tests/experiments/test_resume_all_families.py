"""Every family resumes bit-exactly from a checkpoint (multi-phase GANs, VAE and consistency
step counters, EMA targets included): the state alone determines the rest of the run."""

import importlib
import shutil

import pytest

from experiments import evaluation, sampling, trainer
from tests.experiments.helpers import assert_trees_equal

CONFIGS = [
    ("ddpm_toy", "runlocal=true"),
    ("vae_digits", "runlocal=true"),
    ("wgan_gp_toy", "runlocal=true"),
    ("consistency_toy", "runlocal=true,mode=ct"),
    ("ar_digits", "runlocal=true,cond=true"),
    ("flow_digits", "runlocal=true"),
    ("ebm_toy", "runlocal=true"),
]


def _config(name, arg):
  c = importlib.import_module(f"configs.{name}").get_config(arg)
  c.train.num_steps = 8
  c.train.checkpoint_every = 4
  c.train.log_every = 4
  c.train.num_devices = 1
  c.train.async_checkpoint = False
  c.train.plot_every = 0
  c.optim.warmup_steps = 0
  for section in c.keys():
    if section.startswith("optim_"):
      c[section].warmup_steps = 0
  c.log.progress = False
  c.eval.num_samples = 32
  return c


@pytest.mark.parametrize("name, arg", CONFIGS, ids=[n for n, _ in CONFIGS])
def test_family_resumes_bit_exactly(tmp_path, name, arg, monkeypatch):
  # skip the (slow, irrelevant here) end-of-run evaluation
  monkeypatch.setattr(evaluation, "evaluate_run", lambda run, workdir, state, compile_s: {"status": "done"})
  config = _config(name, arg)
  full = tmp_path / "full"
  trainer.train_and_evaluate(config, str(full))
  resumed = tmp_path / "resumed"
  shutil.copytree(full, resumed)
  shutil.rmtree(resumed / "checkpoints" / "8")
  trainer.train_and_evaluate(config, str(resumed))
  assert_trees_equal(sampling.load(str(resumed))[1], sampling.load(str(full))[1])
