"""Flow matching vs DDPM on the same 2-D data: sample quality vs number of sampling steps.

Trains (or reuses) configs/cfm_toy.py (I-CFM, Lipman et al. 2023 / Tong et al. 2024;
t = 0 noise, t = 1 data, target u = x1 - x0) and configs/ddpm_toy.py (DDPM, Ho et
al. 2020: linear betas, T = 1000, eps-prediction, L_simple) on moons with the same
MLP, batch and seed, then samples both EMA models with the same budgets:
flow matching with Euler and midpoint steps on dx/dt = v(x, t), DDPM with its
ancestral sampler, DDIM (eta = 0) and DPM-Solver++(2M). Quality of n samples
against fresh data: exact W2 (research.metrics.distances.wasserstein2, beside the
W2 of two data draws, the floor) and the squared energy distance, mean over seeds,
both against NFE (network evaluations = steps, 2 per midpoint step).
"""

from __future__ import annotations

import os

import numpy as np

from configs import cfm_toy, ddpm_toy
from experiments import sampling
from experiments.figures import common

NAME = "flow_vs_ddpm"
QUICK_STEPS = 2000
DATASET = "moons"
# (label, run, sampler, steps per NFE)
METHODS = (
    ("flow matching, Euler", "flow", "euler", 1),
    ("flow matching, midpoint", "flow", "midpoint", 2),
    ("DDPM, ancestral", "ddpm", "ddpm", 1),
    ("DDPM, DDIM", "ddpm", "ddim", 1),
    ("DDPM, DPM-Solver++(2M)", "ddpm", "dpm_solver++", 1),
)


def configs(quick: bool) -> dict:
  """The two training configs (same data, network, batch, seed)."""
  if quick:
    flow = cfm_toy.get_config(f"dataset={DATASET},steps={QUICK_STEPS}")
    ddpm = ddpm_toy.get_config(f"dataset={DATASET},steps={QUICK_STEPS},sampler=dpm_solver++,"
                               "sample_steps=10")
    for c in (flow, ddpm):
      c.model.hidden = (128, 128)
      c.optim.warmup_steps = 50
      c.train.checkpoint_every = QUICK_STEPS
      c.train.log_every = 500
      c.eval.num_samples = 200
      c.eval.plot_samples = 200
      c.train.num_devices = 1   # toy models: one device compiles fastest (tests fake 8)
  else:
    flow = cfm_toy.get_config(f"dataset={DATASET}")
    ddpm = ddpm_toy.get_config(f"dataset={DATASET}")
  return {"flow": flow, "ddpm": ddpm}


def quality_curves(dirs: dict, nfes, *, num_samples: int, energy_samples: int, seeds: int) -> dict:
  """W2 / energy distance vs NFE for every method, mean and std over seeds, with the floors."""
  loaded = {name: sampling.load(d) for name, d in dirs.items()}
  scorer = common.ReferenceScores(loaded["flow"][0].dataset, num_samples=num_samples,
                                  energy_samples=energy_samples, seeds=seeds)
  curves = {}
  for label, name, sampler, per_step in METHODS:
    run, state = loaded[name]
    rows = {"nfe": [], "w2": [], "w2_std": [], "energy": [], "energy_std": [], "samples": None}
    for nfe in nfes:
      if nfe % per_step:
        continue
      values, got, _ = scorer.sample(run, state["ema_params"], sampler=sampler,
                                     num_steps=nfe // per_step)
      assert got == [nfe] * seeds, (label, nfe, got)
      rows["nfe"].append(nfe)
      rows["w2"].append(float(values[:, 0].mean()))
      rows["w2_std"].append(float(values[:, 0].std()))
      rows["energy"].append(float(values[:, 1].mean()))
      rows["energy_std"].append(float(values[:, 1].std()))
    curves[label] = rows
  floor = scorer.floor
  return {"curves": curves, "w2_floor": float(floor[:, 0].mean()),
          "energy_floor": float(floor[:, 1].mean()), "num_samples": num_samples,
          "energy_samples": energy_samples, "seeds": seeds,
          "steps": {n: int(np.asarray(loaded[n][1]["step"])) for n in loaded}}


def plot(path: str, data: dict) -> str:
  """W2 and energy distance vs NFE (log x), one line per method, floors dashed."""
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  panels = ((axes[0], "w2", data["w2_floor"], f"W2, n = {data['num_samples']}"),
            (axes[1], "energy", data["energy_floor"],
             f"squared energy distance, n = {data['energy_samples']}"))
  for ax, metric, floor, title in panels:
    for label, c in data["curves"].items():
      ax.errorbar(c["nfe"], c[metric], yerr=c[f"{metric}_std"], marker="o", ms=3, capsize=2,
                  ls="--" if label.startswith("flow") else "-", label=label)
    ax.axhline(floor, color="k", ls=":", lw=1, label="data vs data (floor)")
    common.log_nfe_axes(ax, [n for c in data["curves"].values() for n in c["nfe"]])
    ax.set(xlabel="NFE (sampling steps; midpoint: 2 per step)", title=title)
    ax.grid(True, which="both", alpha=0.3)
  axes[0].legend(fontsize=7)
  steps = data["steps"]
  fig.suptitle(f"flow matching ({steps['flow']} steps) vs DDPM ({steps['ddpm']} steps) on "
               f"{DATASET}, same MLP and batch; mean ± std over {data['seeds']} seed(s)",
               fontsize=9)
  return common.save_figure(fig, path)


def run(out_dir: str, *, quick: bool) -> dict:
  """Train / reuse both models, then compute and draw out_dir/flow_vs_ddpm.{png,json}."""
  root = common.work_root(out_dir, NAME, quick)
  dirs, summaries = {}, {}
  for name, config in configs(quick).items():
    dirs[name] = os.path.join(root, f"{name}_{DATASET}")
    summaries[name] = common.train_cached(config, dirs[name])
  nfes = (2, 16) if quick else (1, 2, 4, 8, 16, 32, 64, 128)   # one sampler compile per point
  data = quality_curves(dirs, nfes, num_samples=200 if quick else 500,
                        energy_samples=200 if quick else 2000, seeds=1 if quick else 3)
  data.update(dataset=DATASET, workdirs=dirs,
              trained={n: {"reused": s["reused"], "w2": s.get("w2")} for n, s in summaries.items()})
  outputs = common.write_outputs(out_dir, NAME, data, lambda png: plot(png, data))
  best = {label: min(c["w2"]) for label, c in data["curves"].items()}
  return {**outputs, "best_w2": best, "w2_floor": data["w2_floor"],
          "reused": {n: s["reused"] for n, s in summaries.items()}}
