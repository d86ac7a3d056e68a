"""The sampler benchmark (experiments/benchmarks/samplers.py) on a tiny configuration:
summary, calibrated-grid rows and the stochastic-samplers table are produced and consistent."""
import numpy as np

from configs import bench_samplers
from experiments.benchmarks import samplers as bench


def _tiny_config():
  config = bench_samplers.get_config("quick=true")
  with config.unlocked():
    config.nfe_budgets = (5,)
    config.spacings = ("time_uniform", "time_quadratic")
    config.num_samples = 64
    config.w2_samples = 64
    config.ours = (("ddim", "ddim", {}), ("dpm_solver-3 multistep", "dpm_solver", {"order": 3}))
    config.calibrate = ("dpm_solver-3 multistep",)
    config.calibration.num_samples = 64
    config.calibration.num_focus = 8
    config.calibration.batch_size = 16
    config.calibration.reference_steps = 50
    config.calibration.num_iters = 3
    config.stochastic = (("ddim eta=1", "ddim", {"eta": 1.0}, 100),)
    config.with_diffusers = False
  return config


def test_sampler_benchmark_tiny():
  result = bench.run(_tiny_config())
  rows = result["rows"]
  calibrated = [r for r in rows if "calib_nfe" in r]
  # One row per sampler: its best fixed spacing or, if that lost, the calibrated grid,
  # whose row names it and carries its grid (5 times from t = 1, decreasing) and cost.
  assert sorted(r["sampler"].split(" (")[0] for r in rows) == ["ddim", "dpm_solver-3 multistep"]
  for r in calibrated:
    assert r["sampler"] == "dpm_solver-3 multistep (calibrated)"
    t = np.asarray(r["timesteps"])
    assert t.shape == (5,) and t[0] == 1.0 and np.all(np.diff(t) < 0)
    assert r["calib_nfe"] > 50 and r["calib_samples"] == 64
  for r in rows:
    assert r["nfe"] <= 5 and np.isfinite(r["rmse vs exact ODE"]) and r["W2"] > 0
  (summary,) = result["summary"]
  best = min(r["rmse vs exact ODE"] for r in rows if r["kind"] == "ODE")
  assert summary["ours rmse"] == best
  assert summary["ours fixed-grid rmse"] >= summary["ours rmse"]
  if calibrated:
    assert summary["best ours"].endswith("(calibrated)")
    assert summary["ours fixed-grid rmse"] > summary["ours rmse"]
  else:
    assert summary["ours fixed-grid rmse"] == summary["ours rmse"]
    (dpm,) = [r for r in rows if r["sampler"].startswith("dpm_solver")]
    assert dpm["calibrated rmse"] >= dpm["rmse vs exact ODE"]
  (stochastic,) = result["stochastic"]
  assert stochastic["steps"] == 100 and stochastic["nfe"] == 100
  assert stochastic["W2 / floor"] == stochastic["W2"] / stochastic["W2 floor"]
  assert stochastic["ok (<= 1.5)"] == (stochastic["W2 / floor"] <= 1.5)
  assert any("Stochastic samplers reach the data" in line for line in result["notes"])
