"""Normalizing-flow densities on the analytic mixtures: every architecture beside the truth.

Trains configs/flow_toy.py with each architecture (realnvp, glow, spline, maf) on ring8
and grid25 (--quick: realnvp and spline runlocal models on ring8), then draws the learned
density exp(log q) on a grid beside the exact mixture density, each panel titled with
its held-out KL(p_data || q) = E_p[log p - log q] (paired estimate, nats) from the run's
evaluation.

Drawn by `python -m launch.figures flow_densities [--quick]`: OUT/flow_densities.{png,json},
runs cached under OUT/_work/flow_densities.
"""

from __future__ import annotations

import os

import numpy as np

from configs import flow_toy
from experiments import sampling
from experiments.figures import common

NAME = "flow_densities"
ARCHS = ("realnvp", "glow", "spline", "maf")
DATASETS = ("ring8", "grid25")
STEPS = 10_000
EXTENT = (-3.0, 3.0)


def make_config(dataset: str, arch: str, *, quick: bool):
  config = flow_toy.get_config(f"dataset={dataset},arch={arch},steps={STEPS}"
                               + (",runlocal=true" if quick else ""))
  if quick:
    config.train.num_steps = 200
    config.train.num_devices = 1   # toy models: one device compiles fastest (tests fake 8)
  return config


def plot(path: str, results: dict) -> str:
  import matplotlib.pyplot as plt
  rows = list(results)
  archs = list(next(iter(results.values()))["archs"])
  fig, axes = plt.subplots(len(rows), len(archs) + 1, figsize=(2.6 * (len(archs) + 1),
                                                               2.7 * len(rows)), squeeze=False)
  for ax_row, dataset in zip(axes, rows):
    r = results[dataset]
    panels = [("true density", r["truth"])] + [
        (f"{a}: KL {r['archs'][a]['kl']:.3f}", r["archs"][a]["density"]) for a in archs]
    for ax, (title, density) in zip(ax_row, panels):
      ax.imshow(np.asarray(density), origin="lower", extent=(*EXTENT, *EXTENT), cmap="magma")
      ax.set_title(f"{dataset}, {title}" if title == "true density" else title, fontsize=8)
      ax.set_xticks([])
      ax.set_yticks([])
  fig.suptitle("flow densities vs the exact mixture (KL = E_p[log p - log q], held-out, nats)",
               fontsize=9)
  return common.save_figure(fig, path)


def run(out_dir: str, *, quick: bool) -> dict:
  """Train / reuse the runs, then compute and draw out_dir/flow_densities.{png,json}."""
  root = common.work_root(out_dir, NAME, quick)
  results = {}
  for dataset in DATASETS[:1] if quick else DATASETS:
    archs = {}
    truth = None
    for arch in ("realnvp", "spline") if quick else ARCHS:
      workdir = os.path.join(root, f"{dataset}_{arch}")
      summary = common.train_cached(make_config(dataset, arch, quick=quick), workdir)
      run_, state = sampling.load(workdir)
      density, truth = run_.family.density_grid(state["ema_params"], extent=EXTENT, size=120)
      archs[arch] = {"kl": summary["kl"], "kl_stderr": summary["kl_stderr"],
                     "test_nll": summary["test_nll"], "density": density}
    results[dataset] = {"truth": truth, "entropy": summary["data_entropy"], "archs": archs}
  data = {"steps": 200 if quick else STEPS, "quick": quick, "extent": EXTENT, "datasets": results}
  outputs = common.write_outputs(out_dir, NAME, data, lambda png: plot(png, results))
  return {**outputs, "kl": {d: {a: v["kl"] for a, v in r["archs"].items()}
                            for d, r in results.items()}}
