"""The trained-sampler benchmark: config refusals, the quick run (ours, and diffusers on the
PyTorch twin when installed), the diffusers wrappers' guidance and clipping formulas.

The fast tests use a workdir of configs/ddpm_digits.py:runlocal=true,cond=true holding the
checkpoint the trainer writes, with the initial EMA parameters perturbed (every leaf plus
N(0, 0.05^2), so the zero-initialised layers act and samplers differ): compiling the
runlocal train step alone takes 60-90 s on the shared 2-core CPU, and building the run
(the family builds its U-Net eagerly) 40 s of CPU, so the quick run reuses the fixture's
built run and restores the checkpoint from the workdir. The slow test trains that config
for real through launch.train and runs the benchmark's launcher on it, nothing reused.
"""

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import bench_trained_samplers, ddpm_digits
from experiments import checkpoint, configuration, sampling
from experiments import run as run_lib
from experiments.benchmarks import trained_samplers
from tests.experiments.helpers import launch, quiet

HAS_DIFFUSERS = (importlib.util.find_spec("torch") is not None
                 and importlib.util.find_spec("diffusers") is not None)


def _runlocal_config():
  return quiet(ddpm_digits.get_config("runlocal=true,cond=true"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A runlocal conditional DDPM workdir: config.json and one checkpoint (perturbed init)."""
  path = str(tmp_path_factory.mktemp("ddpm_runlocal"))
  config = _runlocal_config()
  run = run_lib.build(config)
  state = run_lib.init_state(run)
  rng = np.random.default_rng(0)
  state["ema_params"] = jax.tree.map(
      lambda p: jnp.asarray(np.asarray(p) + 0.05 * rng.standard_normal(p.shape), p.dtype),
      state["ema_params"])
  configuration.save_json(config, path)
  manager = checkpoint.make_manager(path, every=config.train.checkpoint_every, async_save=False)
  checkpoint.save(manager, 0, state, {"family": "diffusion"}, force=True)
  manager.wait_until_finished()
  manager.close()
  return path, run


def _quick(workdir, extra=""):
  arg = f"quick=true,workdir={workdir},verbose=false" + (f",{extra}" if extra else "")
  return bench_trained_samplers.get_config(arg)


def test_quick_run_ours_and_diffusers_on_the_same_network(workdir, monkeypatch):
  # One sampler at one NFE keeps it to one compiled program; w = 2 exercises guidance on both
  # sides (two network passes per call), the workdir's static x0 clipping both wrappers.
  workdir, run = workdir
  monkeypatch.setattr(sampling, "load", lambda w: (run, sampling.restore_readonly(w, run)))
  config = _quick(workdir, "samplers=ddim,nfe=2,calibrate=false,guidance=2,samples=12,batch=12")
  result = trained_samplers.run(config)
  (row,) = result["rows"]
  (info,) = result["models"]
  assert info["guidance_scale"] == 2.0 and info["clip_x0"] == "static" and info["num_samples"] == 12
  assert row["sampler"] == "ddim" and row["NFE"] == 2 and row["ours nfe"] == 2
  assert np.isfinite(row["ours fd"]) and 0 <= row["ours class acc"] <= 1 and row["ours s"] > 0
  assert row["ours nonfinite"] == 0
  assert set(result["columns"]) <= set(row) | {c for c in result["columns"] if c.startswith("diffusers")
                                               or c.startswith("fd ours")}
  if not HAS_DIFFUSERS:
    assert "diffusers fd" not in row and "our side only" in info["diffusers"]
    return
  assert info["diffusers network"] == "torch twin"
  assert info["first-step max |eps_jax - eps_torch|"] < 1e-4
  assert row["diffusers"] == "DDIM" and row["diffusers nfe"] == 2
  assert np.isfinite(row["diffusers fd"]) and row["fd ours/diffusers"] > 0
  assert any("first-step" in note for note in result["notes"])


@pytest.mark.skipif(not HAS_DIFFUSERS, reason="torch and diffusers are optional peers")
def test_diffusers_wrappers_match_our_guidance_and_clipping():
  import torch

  from experiments.benchmarks import peers_diffusers_net as peers
  from research.diffusion import adapters, schedules
  sch = schedules.discrete_vp(schedules.cosine_betas(1000))
  rng = np.random.default_rng(1)
  x = rng.standard_normal((6, 4, 4, 1)).astype(np.float32)
  y = np.arange(6) % 3
  w_c, w_u = rng.standard_normal((2, 4, 4, 1)).astype(np.float32)

  def net_jax(x, t, y):   # a label-dependent toy network
    return jnp.where((y < 3)[:, None, None, None], w_c, w_u) * x + 0.01 * t[:, None, None, None]

  t = jnp.full((6,), 0.9)
  model = adapters.clip_x0(adapters.classifier_free_guidance(
      lambda x, t, y: net_jax(x, sch.model_time(t), y), jnp.asarray(y), guidance_scale=3.0,
      null_label=3), sch, "eps", "static")
  ours = np.asarray(model(jnp.asarray(x), t))

  def net_torch(x, t, y):
    out = net_jax(jnp.asarray(x.permute(0, 2, 3, 1).numpy()), jnp.asarray(t.numpy()),
                  jnp.asarray(y.numpy()))
    return torch.from_numpy(np.asarray(out)).permute(0, 3, 1, 2)

  alpha, sigma = float(sch.alpha(t[0])), float(sch.sigma(t[0]))
  fn = peers.clipped(peers.guided(net_torch, torch.from_numpy(y), 3.0, 3), "static")
  theirs = fn(torch.from_numpy(x).permute(0, 3, 1, 2), torch.full((6,), float(sch.model_time(t[0]))),
              alpha, sigma).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4)


def _workdir_stub(tmp_path):
  (tmp_path / "config.json").write_text("{}")
  return str(tmp_path)


@pytest.mark.parametrize("extra, match", [
    ("nfe=0", "config.nfe"),
    ("nfe=5;-1", "config.nfe"),
    ("samplers=ddim;no_such_sampler", "config.samplers.*no_such_sampler"),
    ("samples=5", "config.num_samples"),
    ("spacing=cosine", "config.diffusers_spacing"),
    ("clip=sometimes", "config.clip_x0"),
    ("samplers=ddim,calibrate=true", "config.calibrate"),
])
def test_bad_fields_are_refused_by_name(tmp_path, extra, match):
  with pytest.raises(ValueError, match=match):
    trained_samplers.run(_quick(_workdir_stub(tmp_path), extra))


def test_missing_workdir_is_refused_by_name(tmp_path):
  with pytest.raises(ValueError, match="config.workdir"):
    trained_samplers.run(_quick(str(tmp_path / "nowhere")))
  with pytest.raises(ValueError, match="config.workdir"):   # a directory, but not a training run
    trained_samplers.run(_quick(str(tmp_path)))
  with pytest.raises(ValueError, match="nfe"):
    bench_trained_samplers.get_config("nfe=five")


def test_presets_resolve_or_fall_back():
  entry = trained_samplers.resolve(("k", "dpmpp_2m_karras", "", "DPM++ 2M Karras"))
  assert entry[0] == "k" and entry[3] == "DPM++ 2M Karras"
  if "dpmpp_2m_karras" not in trained_samplers.samplers.NAMES:   # the fallback's options
    assert entry[1] == "dpm_solver++" and entry[2]["spacing"] == "karras"
  with pytest.raises(ValueError, match="diffusers label"):
    trained_samplers.resolve(("x", "ddim", "", "Nope"))
  with pytest.raises(ValueError, match="config.samplers entry 'x'"):
    trained_samplers.resolve(("x", "ddim", "eta=7", ""))


@pytest.mark.slow
def test_quick_config_with_calibration_on_a_trained_runlocal_model(tmp_path):
  """Train configs/ddpm_digits.py:runlocal=true,cond=true, then the launcher's quick run."""
  work = str(tmp_path / "ddpm")
  out = launch("launch.train", "--config=configs/ddpm_digits.py:runlocal=true,cond=true",
               f"--workdir={work}", timeout=900)
  assert out.returncode == 0, out.stderr[-2000:]
  out = launch("launch.benchmark",
               f"--config=configs/bench_trained_samplers.py:quick=true,workdir={work}",
               f"--out={tmp_path / 'out'}", timeout=1800)
  assert out.returncode == 0, out.stderr[-2000:]
  with open(os.path.join(tmp_path, "out", "trained_samplers_quick.json")) as f:
    result = json.load(f)
  labels = {(r["sampler"], r["NFE"]) for r in result["rows"]}
  assert labels == {("dpm_solver++", 2), ("ddim", 2), ("dpm_solver++", 4), ("ddim", 4),
                    ("dpm_solver++ (calibrated)", 4)}
  calibrated = [r for r in result["rows"] if "calibrated" in r["sampler"]][0]
  assert len(calibrated["timesteps"]) == calibrated["ours steps"] and calibrated["calib nfe/sample"] > 0
  assert all(np.isfinite(r["ours fd"]) for r in result["rows"])


@pytest.mark.skipif(not HAS_DIFFUSERS, reason="torch and diffusers are optional peers")
def test_every_diffusers_scheduler_runs_on_the_cosine_schedule():
  # Karras sigmas on the discrete cosine schedule round to timesteps 999, 999, 999, ...: without
  # set_begin_index(0) diffusers starts at index 1 and runs off its sigmas (IndexError).
  import torch

  from experiments.benchmarks import peers_diffusers_net as peers
  from research.diffusion import schedules
  betas = np.asarray(schedules.cosine_betas(1000))
  x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
  for label in peers.SCHEDULERS:
    out, nfe = peers.run(label, lambda x, t, a, s: 0.1 * x, x, peers.steps_for_nfe(label, 10),
                         betas=betas)
    assert nfe == (9 if label == "Heun" else 10) and bool(torch.isfinite(out).all()), label
