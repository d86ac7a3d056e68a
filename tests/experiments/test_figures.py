"""The figure gallery: every registered figure in --quick mode, the registry, the launcher.

Each figure test runs experiments.figures.run(NAME, tmp_path, quick=True), then checks
the PNG (PNG signature, not empty) and the JSON: the plotted arrays are finite with
the right lengths, plus one figure-specific property with a stated threshold. The
helpers of experiments.figures.common and the launcher's flags are tested below.
"""

from __future__ import annotations

import json
import math
import os

import jax
import numpy as np
import pytest

from experiments import figures
from experiments.figures import common
from tests.experiments.helpers import launch, tiny_config

EXPECTED = ("primitives", "gradient_variance", "forward_diffusion", "sampler_error_vs_nfe",
            "flow_vs_ddpm", "gan_coverage", "beta_vae", "cfg_sweep", "consistency_vs_teacher",
            "langevin", "ar_sampling", "ar_samples", "flow_densities")
# quick runs that take > ~20 s of CPU (trainings + compiles; cfg_sweep ~70 s): run with -m slow
SLOW = {"gan_coverage", "flow_vs_ddpm", "consistency_vs_teacher", "beta_vae", "sampler_error_vs_nfe", "cfg_sweep",
        "ar_sampling", "ar_samples", "flow_densities"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _finite(values) -> np.ndarray:
  array = np.asarray(values, np.float64)
  assert array.size > 0 and np.all(np.isfinite(array)), values
  return array


# -- figure-specific checks (data = the figure's JSON) ------------------------------------------
def check_primitives(data):
  bm = data["box_muller"]
  hist, pdf = _finite(bm["histogram"]), _finite(bm["normal_pdf"])
  assert hist.shape == pdf.shape == (len(bm["bin_edges"]) - 1,)
  assert np.max(np.abs(hist - pdf)) < 0.05          # n = 20000: ~3 sigma of a bin is 0.04
  tp = data["temperature"]
  probs = _finite(tp["probs"])
  assert probs.shape == (len(tp["temperatures"]), 3)
  np.testing.assert_allclose(probs[tp["temperatures"].index(1.0)], [0.82, 0.11, 0.07], atol=0.01)
  np.testing.assert_array_equal(probs[tp["temperatures"].index(0.0)], [1.0, 0.0, 0.0])
  np.testing.assert_allclose(_finite(tp["frequencies"]), probs, atol=0.03)
  fp = data["filters"]
  assert fp["kept"] == [6, 3, 3, 1]                    # the worked example of docs/math.md
  np.testing.assert_allclose(_finite(fp["frequencies"]), _finite(fp["probs"]), atol=0.03)
  gs = data["gumbel_softmax"]
  mean_max = _finite(gs["mean_max"])
  assert np.all(np.diff(mean_max) < 0), mean_max      # one-hotter as tau falls
  np.testing.assert_allclose(gs["mean"][0], gs["softmax"], atol=0.03)   # tau = 0.1 ~ argmax law


def check_gradient_variance(data):
  reparam = data["curves"]["reparameterised"]
  score = data["curves"]["score function"]
  loo = data["curves"]["score function + leave-one-out baseline"]
  n = np.asarray(reparam["n"], np.float64)
  assert reparam["n"] == score["n"] and len(n) == 9 and min(loo["n"]) >= 2
  var_r, var_s = _finite(reparam["variance_mu"]), _finite(score["variance_mu"])
  assert np.all(var_s > var_r)
  np.testing.assert_allclose(var_r, 4.0 / n, rtol=0.3)   # per-sample variance 4 sigma^2
  slope = np.polyfit(np.log(n), np.log(var_s), 1)[0]
  assert -1.2 < slope < -0.8, slope
  assert abs(reparam["mean_mu"][0] - 2.0) < 0.3          # true gradient 2 (std err 0.1)
  _finite(loo["variance_mu"])


def check_forward_diffusion(data):
  assert data["t"] == [0, 250, 500, 750, 999]
  assert np.all(np.diff(_finite(data["alpha_bar"])) < 0)
  for hist, density in zip(data["histogram"], data["density"]):
    assert len(hist) == len(density) == len(data["bin_edges"]) - 1
    assert np.max(np.abs(_finite(hist) - _finite(density))) < 0.06
  assert abs(data["mean"][-1]) < 0.05 and abs(data["std"][-1] - 1.0) < 0.03   # ~ N(0, 1)


def check_sampler_error_vs_nfe(data):
  curves = data["panels"][0]["curves"]
  assert len(curves) >= 10
  for c in curves.values():
    assert len(c["nfe"]) == len(c["rmse"]) >= 1
    assert np.all(np.diff(c["nfe"]) > 0) and max(c["nfe"]) <= 10
    _finite(c["rmse"])
  pp = curves["dpm_solver++ 2M"]
  assert pp["nfe"] == [5, 10] and pp["rmse"][1] < pp["rmse"][0]
  assert pp["rmse"][1] < curves["ddim"]["rmse"][-1]       # second order beats first at NFE 10


def check_flow_vs_ddpm(data):
  assert len(data["curves"]) == 5
  for c in data["curves"].values():
    assert len(c["nfe"]) == len(c["w2"]) == len(c["energy"]) >= 1
    assert np.all(_finite(c["w2"]) > 0)
    _finite(c["energy"])
  assert 0.2 < data["w2_floor"] < 1.0
  euler = data["curves"]["flow matching, Euler"]
  assert euler["nfe"] == [2, 16] and euler["w2"][1] < euler["w2"][0]


def check_gan_coverage(data):
  ring8 = data["datasets"]["ring8"]
  assert set(ring8["curves"]) == {"non-saturating GAN", "WGAN-GP"}
  for rows in ring8["curves"].values():
    assert [r["step"] for r in rows] == [150, 300, 450, 600]
    assert all(0 <= r["modes_hit"] <= 8 and 0.0 <= r["hq_fraction"] <= 1.0 for r in rows)


def check_beta_vae(data):
  panels = data["panels"]
  assert [p["beta"] for p in panels] == [0.5, 4.0]
  for p in panels:
    assert np.asarray(p["latent_mean"]).shape == (297, 2) and len(p["labels"]) == 297
    grid = _finite(p["grid"])
    assert grid.shape == (data["grid_size"] ** 2, 8, 8) and grid.min() >= 0 and grid.max() <= 1
  assert panels[1]["metrics"]["test_kl"] < panels[0]["metrics"]["test_kl"]   # beta 4 < beta 0.5


def check_cfg_sweep(data):
  assert data["scales"] == [0.0, 1.0, 4.0] and data["num_samples"] == 100
  rows = {r["scale"]: r for r in data["rows"]}
  for r in rows.values():
    assert 0.0 <= r["class_accuracy_mean"] <= 1.0 and r["intra_class_spread_mean"] > 0
    assert r["fd_mean"] > 0 and math.isfinite(r["fd_mean"])
    assert 0.0 <= r["recall_mean"] <= 1.0 and 0.0 <= r["coverage_mean"] <= 1.0
  assert data["reference_spread"] > 0
  assert np.asarray(data["samples"]["4.0"]).shape == (10, 10, 8, 8, 1)
  # guidance sharpens the classes even for the quick 1000-step model (0.22 vs 0.08 measured;
  # 100 samples: accuracy std ~0.04), and narrows each class
  assert rows[4.0]["class_accuracy_mean"] > rows[0.0]["class_accuracy_mean"] + 0.05
  assert rows[4.0]["intra_class_spread_mean"] < rows[0.0]["intra_class_spread_mean"]


def check_consistency_vs_teacher(data):
  nfe = {r["method"]: r["nfe"] for r in data["rows"]}
  assert nfe == {"teacher dpm_solver++ 2 NFE": 2, "teacher dpm_solver++ 10 NFE": 10,
                 "iCT 1 step": 1, "iCT 2 steps": 2}
  for r in data["rows"]:
    assert r["w2_mean"] > 0 and math.isfinite(r["w2_mean"]) and math.isfinite(r["energy_mean"])
  assert 0.2 < data["noise_floor_mean"] < 1.0
  assert np.asarray(data["samples"]["iCT 1 step"]).shape == (200, 2)


def check_langevin(data):
  end = _finite(data["endpoints"])
  assert end.shape == (data["num_chains"], 2)
  traj = _finite(data["trajectories"])
  assert traj.shape == (4, len(data["sigmas"]) * data["steps_per_level"] + 1, 2)
  assert data["near_mode_fraction"] > 0.9                       # endpoints sit on the modes
  np.testing.assert_allclose(data["mode_frequencies"], data["weights"], atol=0.06)


def check_ar_sampling(data):
  # the sweep's own checks are in tests/experiments/test_ar_sampling_figure.py
  assert data["compiles"] == 1 and data["num_samples"] == 200
  rows = {(r["temperature"], r["top_p"]): r for r in data["rows"]}
  low, high = rows[(0.3, 1.0)], rows[(1.5, 1.0)]
  assert low["intra_class_spread_mean"] < high["intra_class_spread_mean"]
  assert low["class_accuracy_mean"] >= high["class_accuracy_mean"]


def check_ar_samples(data):
  assert np.asarray(data["conditional"]["images"]).shape == (10, 10, 8, 8, 1)
  assert np.asarray(data["heldout"]["images"]).shape == (10, 10, 8, 8, 1)
  assert data["conditional"]["class_accuracy"] > 0.6


def check_flow_densities(data):
  ring8 = data["datasets"]["ring8"]
  truth = _finite(ring8["truth"])
  cell = (data["extent"][1] - data["extent"][0]) / (truth.shape[0] - 1)
  assert abs(truth.sum() * cell ** 2 - 1.0) < 0.02            # the exact density on the grid
  for arch, r in ring8["archs"].items():
    assert _finite(r["density"]).shape == truth.shape
    assert r["kl"] > -3 * r["kl_stderr"], arch                 # KL >= 0 within its error
  # 200 steps: the spline flow is already closer to the ring than the affine coupling flow
  assert ring8["archs"]["spline"]["kl"] < ring8["archs"]["realnvp"]["kl"]


CHECKS = {name: globals()[f"check_{name}"] for name in EXPECTED}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in EXPECTED])
def test_figure_quick(name, tmp_path):
  summary = figures.run(name, str(tmp_path), quick=True)
  png, json_path = tmp_path / f"{name}.png", tmp_path / f"{name}.json"
  assert summary["png"] == str(png) and summary["json"] == str(json_path)
  with open(png, "rb") as f:
    assert f.read(8) == PNG_SIGNATURE
  assert png.stat().st_size > 10_000
  with open(json_path) as f:
    CHECKS[name](json.load(f))


def test_registry_names_and_descriptions():
  assert figures.names() == EXPECTED
  for name in EXPECTED:
    assert figures.describe(name) and "\n" not in figures.describe(name)
    assert callable(figures.get(name).run)


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError, match="name") as err:
    figures.get("cfg_sweeep")
  assert all(name in str(err.value) for name in EXPECTED)
  with pytest.raises(ValueError, match="name"):
    figures.describe("nope")


def test_output_dir_keeps_quick_runs_off_the_gallery():
  assert figures.output_dir() == figures.GALLERY == "figures"
  assert figures.output_dir(quick=True) == figures.QUICK_OUT == "workdirs/figures_quick"
  assert figures.output_dir("elsewhere", quick=True) == "elsewhere"      # --out is honoured
  assert figures.output_dir(None, workdir="runs/r") == "runs/r"
  assert figures.output_dir("o", workdir="runs/r") == "o"
  with pytest.raises(ValueError, match="out"):
    figures.output_dir(3)


def test_write_outputs_writes_json_then_draws_png(tmp_path):
  import matplotlib.pyplot as plt
  drawn = []

  def draw(png):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    drawn.append(common.save_figure(fig, png, dpi=50))

  out = common.write_outputs(str(tmp_path / "o"), "x", {"a": np.arange(2)}, draw)
  assert out == {"png": str(tmp_path / "o" / "x.png"), "json": str(tmp_path / "o" / "x.json")}
  assert drawn == [out["png"]] and plt.get_fignums() == []             # saved and closed
  with open(out["png"], "rb") as f:
    assert f.read(8) == PNG_SIGNATURE
  with open(out["json"]) as f:
    assert json.load(f) == {"a": [0, 1]}
  with pytest.raises(ValueError, match="draw"):
    common.write_outputs(str(tmp_path), "y", {}, None)


def test_log_nfe_axes_ticks_each_nfe_once():
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots()
  common.log_nfe_axes(ax, [10, 2, 2, 4])
  assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
  assert list(ax.get_xticks()) == [2, 4, 10]
  assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "4", "10"]
  plt.close(fig)


class _Gaussian2D:
  def sample(self, key, n):
    return jax.random.normal(key, (n, 2))


def test_reference_scores_are_zero_on_the_reference_and_positive_on_the_floor():
  scorer = common.ReferenceScores(_Gaussian2D(), num_samples=64, energy_samples=128, seeds=2)
  assert scorer.big == 128 and len(scorer.refs) == 2 and scorer.refs[1].shape == (128, 2)
  w2, energy = scorer(scorer.refs[1], 1)
  assert w2 == pytest.approx(0.0, abs=1e-3) and energy == pytest.approx(0.0, abs=1e-5)
  assert scorer.floor.shape == (2, 2) and np.all(scorer.floor > 0)
  assert scorer(scorer.refs[1] + 3.0, 1)[0] > 2.5                        # W2 of a shift by (3, 3)
  for arg in ("num_samples", "energy_samples", "seeds"):
    with pytest.raises(ValueError, match=arg):
      common.ReferenceScores(_Gaussian2D(), **{"num_samples": 8, "energy_samples": 8, "seeds": 1,
                                               arg: 0})


def test_reference_scores_sample_a_trained_run(tmp_path):
  from experiments import sampling, trainer
  trainer.train_and_evaluate(tiny_config(num_devices=1), str(tmp_path))
  run, state = sampling.load(str(tmp_path))
  scorer = common.ReferenceScores(run.dataset, num_samples=32, energy_samples=64, seeds=2)
  scores, nfes, first = scorer.sample(run, state["ema_params"], sampler="euler", num_steps=4)
  assert scores.shape == (2, 2) and np.all(np.isfinite(scores)) and np.all(scores[:, 0] > 0)
  assert nfes == [4, 4] and first.shape == (32, 2)


def test_to_jsonable_converts_arrays_and_scalars():
  out = common.to_jsonable({"a": np.arange(3), "b": (np.float32(1.5), [np.int64(2)]),
                            1: np.zeros((2, 1))})
  assert out == {"a": [0, 1, 2], "b": [1.5, [2]], "1": [[0.0], [0.0]]}
  json.dumps(out)


def test_train_cached_replaces_stale_run_then_reuses_it(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text(json.dumps({"family": "something else"}))
  (workdir / "stale.txt").write_text("from another config")
  config = tiny_config(num_devices=1)
  assert common.finished_summary(config, str(workdir)) is None
  first = common.train_cached(config, str(workdir))
  assert first["status"] == "done" and first["reused"] is False
  assert not (workdir / "stale.txt").exists()            # the stale cache was deleted
  again = common.train_cached(tiny_config(num_devices=1), str(workdir))
  assert again["reused"] is True and again["w2"] == first["w2"]
  assert common.finished_summary(tiny_config(num_devices=1, num_steps=10), str(workdir)) is None


def test_work_root_is_git_ignored(tmp_path):
  root = common.work_root(str(tmp_path), "x", quick=True)
  assert root == os.path.join(str(tmp_path), "_work", "x_quick") and os.path.isdir(root)
  with open(tmp_path / "_work" / ".gitignore") as f:
    assert f.read().strip() == "*"


def test_launcher_list_prints_every_name():
  out = launch("launch.figures", "--list", timeout=120)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert [line.split()[0] for line in lines] == list(EXPECTED)


def test_launcher_unknown_name_fails_listing_valid_names():
  out = launch("launch.figures", "not_a_figure", "--quick", timeout=120)
  assert out.returncode != 0
  assert "not_a_figure" in out.stderr and all(name in out.stderr for name in EXPECTED)


def test_launcher_workdir_is_for_cfg_sweep_only(tmp_path):
  out = launch("launch.figures", "forward_diffusion", f"--workdir={tmp_path}", timeout=120)
  assert out.returncode != 0 and "cfg_sweep" in out.stderr


def test_launcher_writes_a_figure(tmp_path):
  out = launch("launch.figures", "forward_diffusion", "--quick", f"--out={tmp_path}", timeout=300)
  assert out.returncode == 0, out.stderr
  assert (tmp_path / "forward_diffusion.png").exists()
  with open(tmp_path / "forward_diffusion.json") as f:
    check_forward_diffusion(json.load(f))
