"""The guidance-sweep metrics of experiments.figures.cfg_sweep and its --workdir entry point
(python -m launch.figures cfg_sweep --workdir=RUN); the figure itself runs in
tests/experiments/test_figures.py."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.figures import cfg_sweep
from tests.experiments.helpers import launch, tiny_config
from experiments import trainer


def test_intra_class_spread_matches_hand_computed_distances():
  features = np.array([[0, 0], [3, 4], [0, 0], [0, 1], [0, 2], [7, 7]], np.float32)
  labels = np.array([0, 0, 1, 1, 1, 2])      # class 2 has one sample: skipped
  # class 0: one pair at distance 5; class 1: distances 1, 2, 1 -> mean 4/3
  assert cfg_sweep.intra_class_spread(features, labels, 3) == pytest.approx((5 + 4 / 3) / 2)


def test_intra_class_spread_is_scale_equivariant_and_zero_for_copies():
  rng = np.random.default_rng(0)
  f, y = rng.normal(size=(40, 5)), np.arange(40) % 4
  assert cfg_sweep.intra_class_spread(3 * f, y, 4) == pytest.approx(
      3 * cfg_sweep.intra_class_spread(f, y, 4))
  copies = np.repeat(f[:4], 10, axis=0)
  assert cfg_sweep.intra_class_spread(copies, np.repeat(np.arange(4), 10), 4) == 0.0


def test_intra_class_spread_needs_a_class_with_two_samples():
  with pytest.raises(ValueError, match="labels"):
    cfg_sweep.intra_class_spread(np.zeros((3, 2)), np.array([0, 1, 2]), 3)


def test_sweep_rejects_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="num_samples"):
    cfg_sweep.sweep(str(tmp_path), (1.0,), num_samples=10)
  with pytest.raises(ValueError, match="seeds"):
    cfg_sweep.sweep(str(tmp_path), (1.0,), seeds=0)
  with pytest.raises(ValueError, match="scales"):
    cfg_sweep.sweep(str(tmp_path), (-1.0,))


def test_sweep_rejects_an_unconditional_run(tmp_path):
  config = tiny_config(num_devices=1)
  trainer.train_and_evaluate(config, str(tmp_path))
  with pytest.raises(ValueError, match="unconditional"):
    cfg_sweep.sweep(str(tmp_path), (1.0,))
  with pytest.raises(ValueError, match="unconditional"):
    cfg_sweep.run_workdir(str(tmp_path), str(tmp_path / "out"), num_samples=20, seeds=1)
  # the launcher's --workdir runs the same sweep (and fails the same way)
  out = launch("launch.figures", "cfg_sweep", f"--workdir={tmp_path}", "--num_samples=20",
               "--seeds=1", "--scales=0,1", timeout=180)
  assert out.returncode != 0 and "unconditional" in out.stderr
  out = launch("launch.figures", "cfg_sweep", f"--workdir={tmp_path}", "--scales=a,b", timeout=120)
  assert out.returncode != 0 and "--scales" in out.stderr


def test_quick_config_is_conditional_and_small():
  config = cfg_sweep.make_config(quick=True)
  assert config.model.num_classes == 10 and config.model.label_dropout > 0
  assert config.model.channels == 16 and config.train.num_steps == 1000
  full = cfg_sweep.make_config(quick=False)
  assert full.model.num_classes == 10 and full.train.num_steps == 3000


def test_table_has_one_row_per_scale_with_mean_and_std():
  metrics = ("class_accuracy", "intra_class_spread", "fd", "precision", "recall", "coverage")
  rows = [{"scale": w, **{f"{m}_mean": w / 10 for m in metrics},
           **{f"{m}_std": 0.01 for m in metrics}} for w in (0.0, 1.5)]
  lines = cfg_sweep.table({"rows": rows}).splitlines()
  assert lines[0] == "| w | " + " | ".join(metrics) + " |" and lines[1].count("|---") == 7
  assert lines[2].startswith("| 0 | 0.000 ± 0.010 |") and lines[3].startswith("| 1.5 | 0.150 ± ")
  assert len(lines) == 4 and lines[3].count("±") == len(metrics)
