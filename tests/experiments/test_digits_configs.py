"""The U-Net digits configs train class-conditionally (label dropout, guidance) end to end."""

import importlib
import json

import numpy as np
import pytest

from experiments import trainer
from experiments.families.protocol import SampleRequest

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


@pytest.mark.parametrize("clip", ["static", "dynamic"])
def test_clipped_diffusion_samples_stay_in_the_pixel_range(clip):
  """An untrained network's eps is wrong everywhere: unclipped samples leave [-1, 1] far
  behind, x0-clipped ones stay inside (clip_x0 is the config default for ddpm_digits)."""
  config = importlib.import_module("configs.ddpm_digits").get_config(f"runlocal=true,clip={clip}")
  run = trainer.build(config)
  params = run.family.init(run.keys["init"])
  x, _ = run.family.sample(params, run.keys["sample"], 8)
  assert np.all(np.isfinite(x)) and np.abs(np.asarray(x)).max() <= 1.0 + 0.02
  raw, _ = run.family.sample(params, run.keys["sample"], 8, SampleRequest(clip_x0="none"))
  assert np.abs(np.asarray(raw)).max() > 2.0
  with pytest.raises(ValueError, match="clip_x0"):
    run.family.sample(params, run.keys["sample"], 8, SampleRequest(clip_x0="sometimes"))


def test_labels_are_refused_by_an_unconditional_model():
  config = importlib.import_module("configs.ddpm_digits").get_config("runlocal=true")
  run = trainer.build(config)
  params = run.family.init(run.keys["init"])
  with pytest.raises(ValueError, match="labels"):
    run.family.sample(params, run.keys["sample"], 4, SampleRequest(labels=np.zeros(4, np.int32)))
