"""Every paper-scale config (configs/*_cifar10.py) runs its `runlocal=true` variant for two
steps on mocked tfds data, over 8 fake CPU devices, end to end (train, checkpoint, evaluate)."""

import glob
import importlib
import json
import os

import jax
import pytest
import tensorflow_datasets as tfds

from tests.experiments.helpers import REPO

PAPER_CONFIGS = sorted(os.path.basename(p)[:-3]
                       for p in glob.glob(os.path.join(REPO, "configs", "*_cifar10.py")))
# The default suite runs one paper config (compiling U-Net steps on 8 fake devices takes
# 1-3 min per config on 2 cores); the others are marked slow (python -m pytest -m slow).
_DEFAULT = ("ddpm_cifar10", "runlocal=true")
CASES = [(name, "runlocal=true") for name in PAPER_CONFIGS]
CASES += [("ddpm_cifar10", "runlocal=true,paper=edm"), ("ddpm_cifar10", "runlocal=true,paper=iddpm"),
          ("ddpm_cifar10", "runlocal=true,dataset=mnist,cond=true")]


def test_every_family_has_a_paper_config():
  families = {importlib.import_module(f"configs.{n}").get_config("runlocal=true").family
              for n in PAPER_CONFIGS}
  assert {"diffusion", "flow_matching", "consistency"} <= families


@pytest.mark.parametrize("name, arg", [
    c if c == _DEFAULT else pytest.param(*c, marks=pytest.mark.slow) for c in CASES],
    ids=[f"{n}:{a}" for n, a in CASES])
def test_runlocal_trains_two_steps_on_mock_data_on_8_devices(tmp_path, name, arg):
  from experiments import trainer
  assert jax.device_count() == 8
  config = importlib.import_module(f"configs.{name}").get_config(arg)
  config.train.async_checkpoint = False
  assert config.train.num_steps == 2 and config.train.batch_size % 8 == 0
  with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
    summary = trainer.train_and_evaluate(config, str(tmp_path))
  assert summary["status"] == "done" and summary["step"] == 2
  eval_json = json.loads((tmp_path / "eval.json").read_text())
  assert eval_json["step"] == 2
  metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert any(m.get("event") == "start" and m.get("num_devices") == 8 for m in metrics)
  losses = [m["loss"] for m in metrics if "loss" in m]
  assert losses and all(l == l and abs(l) < 1e6 for l in losses)  # finite


def test_paper_config_refuses_unknown_dataset():
  from configs import ddpm_cifar10
  with pytest.raises(ValueError, match="dataset"):
    ddpm_cifar10.get_config("dataset=imagenet")
