"""The autoregressive sampling figures: experiments.figures.ar_sampling (the temperature /
top-p sweep) and experiments.figures.ar_samples (samples beside held-out digits).

The helpers (settings, copies, grids, table, plots, adopting a finished run) are tested on
synthetic data; the figures themselves run in --quick mode under -m slow (a 600-step model,
~1-2 min of CPU each), where the sweep must show the filters' effect: sharper (lower T,
lower p) means higher class accuracy, less intra-class spread and fewer bits per dim under
the model, with one compile of the decode loop for the whole sweep.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from experiments import figures, trainer
from experiments.figures import ar_samples, ar_sampling, common
from configs import ar_digits

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path, min_bytes=10_000):
  with open(path, "rb") as f:
    assert f.read(8) == PNG_SIGNATURE
  assert os.path.getsize(path) > min_bytes


def test_both_figures_are_registered():
  assert {"ar_sampling", "ar_samples"} <= set(figures.names())
  assert figures.get("ar_sampling") is ar_sampling and figures.get("ar_samples") is ar_samples
  for name in ("ar_sampling", "ar_samples"):
    assert figures.describe(name) and "\n" not in figures.describe(name)


def test_settings_sweep_temperature_at_p_1_then_top_p_at_t_1():
  rows = ar_sampling.settings((0.5, 1.5), (0.9, 1.0))
  assert [(r["control"], r["temperature"], r["top_p"]) for r in rows] == [
      ("temperature", 0.5, 1.0), ("temperature", 1.5, 1.0), ("top_p", 1.0, 0.9),
      ("top_p", 1.0, 1.0)]
  assert [r["value"] for r in rows] == [0.5, 1.5, 0.9, 1.0]
  full = ar_sampling.settings()
  assert len(full) == len(ar_sampling.TEMPERATURES) + len(ar_sampling.TOP_PS) == 14
  with pytest.raises(ValueError, match="temperatures"):
    ar_sampling.settings((0.0,), (1.0,))
  with pytest.raises(ValueError, match="top_ps"):
    ar_sampling.settings((1.0,), (1.5,))
  with pytest.raises(ValueError, match="top_ps"):
    ar_sampling.settings((1.0,), (0.0,))


def test_sweep_rejects_bad_arguments_before_loading(tmp_path):
  with pytest.raises(ValueError, match="num_samples"):
    ar_sampling.sweep(str(tmp_path), (1.0,), (1.0,), num_samples=10)
  with pytest.raises(ValueError, match="seeds"):
    ar_sampling.sweep(str(tmp_path), (1.0,), (1.0,), seeds=0)
  with pytest.raises(ValueError, match="temperatures"):
    ar_sampling.sweep(str(tmp_path), (-1.0,), (1.0,))


def test_copy_fraction_counts_rows_equal_to_a_training_row():
  train = np.array([[0, 1, 2], [3, 4, 5], [0, 0, 0]])
  tokens = np.array([[3, 4, 5], [3, 4, 6], [0, 0, 0], [5, 4, 3]])
  assert ar_sampling.copy_fraction(tokens, train) == 0.5
  assert ar_sampling.copy_fraction(train, train) == 1.0
  with pytest.raises(ValueError, match="shapes"):
    ar_sampling.copy_fraction(tokens, train[:, :2])


def test_grid_of_keeps_the_first_draws_of_each_label_in_label_order():
  labels = np.arange(30) % 3
  x = np.arange(30, dtype=np.float32).reshape(30, 1, 1, 1)
  grid = ar_sampling.grid_of(x, labels, 3, per=4)
  assert grid.shape == (3, 4, 1, 1, 1)
  np.testing.assert_array_equal(grid[1, :, 0, 0, 0], [1, 4, 7, 10])


def test_quick_config_is_conditional_small_and_its_ema_forgets_the_init():
  quick = ar_sampling.make_config(quick=True)
  assert quick.model.num_classes == 10 and quick.model.num_layers == 2
  assert quick.train.num_steps == 600 and quick.ema_decay ** quick.train.num_steps < 0.01
  assert ar_sampling.make_config(quick=True, cond=False).model.num_classes == 0
  full = ar_sampling.make_config(quick=False)
  assert full.to_dict() == ar_digits.get_config("cond=true").to_dict()
  assert ar_sampling.make_config(quick=False, cond=False).to_dict() == \
      ar_digits.get_config().to_dict()


def _fake_result(temperatures=(0.3, 1.0, 1.5), top_ps=(0.5, 1.0), seeds=2):
  rng = np.random.default_rng(0)
  rows = ar_sampling.settings(temperatures, top_ps)
  for i, r in enumerate(rows):
    r["seconds"] = 3.0 if i == 0 else 0.2
    for m in ar_sampling.METRICS:
      r[m] = list(rng.uniform(0.1, 1.0, seeds))
      r[f"{m}_mean"], r[f"{m}_std"] = float(np.mean(r[m])), float(np.std(r[m]))
  samples = {f"T={r['temperature']:g} p={r['top_p']:g}": rng.uniform(size=(10, 10, 8, 8, 1))
             for r in rows}
  return {"rows": rows, "samples": samples, "seeds": seeds, "num_samples": 1000, "step": 3000,
          "compiles": 1}


def test_table_has_one_row_per_setting_with_mean_and_std():
  result = _fake_result()
  lines = ar_sampling.table(result).splitlines()
  cols = len(ar_sampling.TABLE_METRICS)
  assert lines[0].startswith("| T | top-p | class_accuracy | intra_class_spread | fd |")
  assert lines[0].endswith("| train copies |") and lines[1].count("|---") == cols + 2
  assert len(lines) == 2 + 5
  assert lines[2].startswith("| 0.3 | 1 | ") and lines[5].startswith("| 1 | 0.5 | ")
  r = result["rows"][0]
  assert f"{r['class_accuracy_mean']:.3f} ± {r['class_accuracy_std']:.3f}" in lines[2]
  assert all(line.count("±") == cols for line in lines[2:])
  line = ar_sampling.timing(result)
  assert line.startswith("decode loop compiled 1x for 5 settings; first setting 3.00 s, the "
                         "others 0.20-0.20 s")


def test_grid_keys_pick_low_unit_and_high_temperature():
  assert ar_sampling.grid_keys(_fake_result()) == ["T=0.3 p=1", "T=1 p=1", "T=1.5 p=1"]
  assert ar_sampling.grid_keys(_fake_result((0.7, 2.0), (1.0,))) == ["T=0.7 p=1", "T=2 p=1"]


def test_plots_write_pngs(tmp_path):
  result = _fake_result()
  _check_png(ar_sampling.plot(str(tmp_path / "sweep.png"), result))
  rng = np.random.default_rng(1)
  samples = {"conditional": {"images": rng.uniform(size=(10, 10, 8, 8, 1)),
                             "class_accuracy": 0.9, "step": 3000},
             "heldout": {"images": rng.uniform(size=(10, 10, 8, 8, 1))},
             "unconditional": {"images": rng.uniform(size=(100, 8, 8, 1))}}
  _check_png(ar_samples.plot(str(tmp_path / "samples.png"), samples))
  del samples["unconditional"]
  _check_png(ar_samples.plot(str(tmp_path / "two.png"), samples))


def _fake_finished_run(path, config, *, status="done", step=None, progress=True):
  """A workdir as launch.train leaves it (its own log settings), without real checkpoints."""
  os.makedirs(os.path.join(path, "checkpoints", "600"))
  (path / "checkpoints" / "600" / "weights").write_text("w")
  (path / ".lock").write_text("123")
  mine = json.loads(config.to_json_best_effort(sort_keys=True))
  mine["log"]["progress"] = progress
  common.write_json(str(path / "config.json"), mine)
  common.write_json(str(path / "eval.json"),
                    {"status": status, "step": config.train.num_steps if step is None else step})


def test_adopt_copies_a_finished_run_of_the_same_config_into_the_cache(tmp_path):
  source, out = tmp_path / "run", tmp_path / "out"
  _fake_finished_run(source, ar_sampling.make_config(quick=True))
  assert ar_sampling.cached_summary(str(out), True) is None
  assert ar_sampling.adopt(str(source), str(out), quick=True)
  assert ar_sampling.cached_summary(str(out), True)["status"] == "done"
  assert ar_sampling.cached_summary(str(out), True, cond=False) is None   # no unconditional run
  assert not ar_sampling.adopt(str(source), str(out), quick=True, cond=False)   # cond config
  cache = out / "_work" / "ar_sampling_quick" / "ar_digits_cond"
  assert (cache / "checkpoints" / "600" / "weights").read_text() == "w"
  assert not (cache / ".lock").exists()
  config = ar_sampling.make_config(quick=True)
  config.log.progress = False
  assert common.finished_summary(config, str(cache))["status"] == "done"   # train_cached reuses
  assert not ar_sampling.adopt(str(source), str(out), quick=True)           # already cached
  assert ar_sampling.adopt(str(source), str(out), quick=True, force=True)
  assert json.loads((source / "config.json").read_text())["log"]["progress"] is True


@pytest.mark.parametrize("change", ["other_config", "unfinished", "short", "missing"])
def test_adopt_refuses_other_runs_and_changes_nothing(tmp_path, change):
  source, out = tmp_path / "run", tmp_path / "out"
  config = ar_sampling.make_config(quick=True)
  if change == "other_config":
    config.model.dim = 32
  if change != "missing":
    _fake_finished_run(source, config, status="running" if change == "unfinished" else "done",
                       step=10 if change == "short" else None)
  assert not ar_sampling.adopt(str(source), str(out), quick=True)
  assert not (out / "_work" / "ar_sampling_quick" / "ar_digits_cond").exists()


def test_sweep_rejects_an_unconditional_run(tmp_path):
  config = ar_digits.get_config("runlocal=true")
  config.train.num_devices = 1
  trainer.train_and_evaluate(config, str(tmp_path))
  with pytest.raises(ValueError, match="unconditional"):
    ar_sampling.sweep(str(tmp_path), (1.0,), (1.0,), num_samples=20, seeds=1)


@pytest.fixture(scope="module")
def quick_out(tmp_path_factory):
  return tmp_path_factory.mktemp("ar_figures")


@pytest.mark.slow
def test_sweep_quick_shows_the_filters_trade_diversity_for_class_accuracy(quick_out):
  summary = figures.run("ar_sampling", str(quick_out), quick=True)
  assert summary["png"] == str(quick_out / "ar_sampling.png")
  _check_png(summary["png"])
  assert summary["table"].count("\n| ") == 5 and "compiled 1x" in summary["table"]
  with open(summary["json"]) as f:
    data = json.load(f)
  assert data["compiles"] == 1                 # five settings, one compile of the decode loop
  assert data["num_samples"] == 200 and data["reference_spread"] > 0
  rows = {(r["temperature"], r["top_p"]): r for r in data["rows"]}
  assert set(rows) == {(0.3, 1.0), (1.0, 1.0), (1.5, 1.0), (1.0, 0.5)}
  for r in rows.values():
    for m in ("class_accuracy", "precision", "recall", "coverage", "train_copy_fraction"):
      assert 0.0 <= r[f"{m}_mean"] <= 1.0
    assert r["fd_mean"] > 0 and np.isfinite(r["fd_mean"])
  assert np.asarray(data["samples"]["T=1.5 p=1"]).shape == (10, 10, 8, 8, 1)
  # measured on the quick model: accuracy 0.93 / 0.90 / 0.60, spread 0.97 / 1.18 / 1.47 and
  # bits/dim 1.35 / 1.81 / 2.48 at T = 0.3 / 1 / 1.5; 200 samples: accuracy std ~0.03
  t03, t1, t15, p05 = rows[(0.3, 1.0)], rows[(1.0, 1.0)], rows[(1.5, 1.0)], rows[(1.0, 0.5)]
  assert t03["class_accuracy_mean"] >= t15["class_accuracy_mean"] + 0.1
  assert t03["intra_class_spread_mean"] + 0.2 < t15["intra_class_spread_mean"]
  bits = [r["sample_bits_per_dim_mean"] for r in (t03, t1, t15)]
  assert bits[0] < bits[1] < bits[2]           # sharper filters, likelier samples
  assert p05["sample_bits_per_dim_mean"] < t1["sample_bits_per_dim_mean"]
  assert p05["intra_class_spread_mean"] < t1["intra_class_spread_mean"]
  assert p05["class_accuracy_mean"] >= t1["class_accuracy_mean"] - 0.05


@pytest.mark.slow
def test_samples_quick_beside_heldout_digits(quick_out):
  summary = figures.run("ar_samples", str(quick_out), quick=True)
  _check_png(summary["png"])
  with open(summary["json"]) as f:
    data = json.load(f)
  cond, held, uncond = data["conditional"], data["heldout"], data["unconditional"]
  assert np.asarray(cond["images"]).shape == np.asarray(held["images"]).shape == (10, 10, 8, 8, 1)
  assert np.asarray(uncond["images"]).shape == (100, 8, 8, 1)
  assert cond["class_accuracy"] > 0.6          # 0.88 measured for the quick model
  for part in (cond, uncond):
    assert 0.0 <= part["train_copy_fraction"] <= 1.0
  # held-out rows are the classes: the digits classifier agrees with them
  from experiments import image_metrics
  _, logits = image_metrics.classifier_features(np.asarray(held["images"]).reshape(-1, 8, 8, 1),
                                                return_logits=True)
  assert np.mean(np.argmax(np.asarray(logits), -1) == np.repeat(np.arange(10), 10)) > 0.9
