"""The U-Net digits configs train class-conditionally (label dropout, guidance) end to end."""

import importlib
import json

import numpy as np
import pytest

from experiments import trainer

CASES = [("ddpm_digits", "runlocal=true,cond=true,guidance=2.0"),
         pytest.param("cfm_digits", "runlocal=true,cond=true,guidance=2.0", marks=pytest.mark.slow),
         pytest.param("consistency_digits", "runlocal=true,cond=true", marks=pytest.mark.slow)]


@pytest.mark.parametrize("name, arg", CASES)
def test_conditional_digits_config_trains_and_reports_image_metrics(tmp_path, name, arg):
  config = importlib.import_module(f"configs.{name}").get_config(arg)
  config.train.num_devices = 1
  config.train.async_checkpoint = False
  config.eval.num_samples = 40
  summary = trainer.train_and_evaluate(config, str(tmp_path))
  assert summary["status"] == "done" and summary["step"] == config.train.num_steps
  on_disk = json.loads((tmp_path / "eval.json").read_text())
  for key in ("fd", "precision", "recall", "class_accuracy"):
    assert np.isfinite(on_disk[key]), key
  assert 0.0 <= on_disk["class_accuracy"] <= 1.0


def test_labels_are_refused_by_an_unconditional_model():
  config = importlib.import_module("configs.ddpm_digits").get_config("runlocal=true")
  run = trainer.build(config)
  params = run.family.init(run.keys["init"])
  with pytest.raises(ValueError, match="labels"):
    run.family.sample(params, run.keys["sample"], 4, labels=np.zeros(4, np.int32))
