"""Mode coverage over training: non-saturating GAN vs WGAN-GP on Gaussian-mixture toy sets.

Trains configs/gan_toy.py (non-saturating GAN, Goodfellow et al. 2014) and
configs/wgan_gp_toy.py (WGAN-GP, Gulrajani et al. 2017: lambda = 10, n_critic = 5)
with the same steps, batch and seed, keeping a checkpoint every `every` steps,
then measures mode coverage (research/metrics/modes.py: modes hit = modes with
>= 0.2 n / K samples within 3 std, HQ fraction, KL to uniform) of the EMA
generator at every kept checkpoint with one fixed sampling key.

Drawn by `python -m launch.figures gan_coverage [--quick]`: ring8 and grid25 (ring8
only with --quick) in one figure, OUT/gan_coverage.{png,json}, runs cached under
OUT/_work/gan_coverage.
"""

from __future__ import annotations

import os

import jax

from configs import gan_toy, wgan_gp_toy
from experiments import checkpoint, configuration, trainer
from experiments.figures import common

NAME = "gan_coverage"
RUNS = (("gan", gan_toy, "non-saturating GAN"), ("wgan_gp", wgan_gp_toy, "WGAN-GP"))
DATASETS = ("ring8", "grid25")
FULL = {"steps": 3000, "every": 250}
QUICK = {"steps": 600, "every": 150}   # runlocal models (2 x 32 MLPs), ring8 only
FINAL_KEYS = ("step", "modes_hit", "hq_fraction", "mode_kl", "w2", "w2_noise_floor", "w2_ratio")


def coverage_curve(workdir: str, *, seed: int = 0) -> list[dict]:
  """Mode coverage of the EMA generator at every checkpoint kept in `workdir`."""
  run = trainer.build(configuration.load_json(workdir))
  manager = checkpoint.make_manager(workdir, every=run.config.train.checkpoint_every,
                                    keep=10**9, async_save=False)
  key = jax.random.fold_in(run.keys["eval"], 10_000 + seed)
  rows = []
  try:
    for step in sorted(manager.all_steps()):
      state, _ = checkpoint.restore(manager, run.abstract_state, step)
      rows.append({"step": int(step), **run.family.evaluate(state["ema_params"], key, run.dataset)})
  finally:
    manager.close()
  return rows


def make_config(module, dataset: str, steps: int, every: int, *, quick: bool = False):
  """The module's config on `dataset` for `steps` steps, keeping a checkpoint every `every`."""
  config = module.get_config(f"dataset={dataset},steps={steps},plot_every=0"
                             + (",runlocal=true" if quick else ""))
  config.train.num_steps = steps
  if quick:   # the sample size of the other quick figures (shared W2 compiles)
    config.eval.num_samples = config.eval.plot_samples = 200
    config.train.num_devices = 1   # toy models: one device compiles fastest (tests fake 8)
  config.train.checkpoint_every = every
  config.train.keep_every = every
  config.log.progress = False
  return config


def plot(path: str, results: dict) -> str:
  """One row per dataset, modes hit and HQ fraction over training."""
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(len(results), 2, figsize=(9, 3.2 * len(results)), squeeze=False)
  for row, (dataset, result) in zip(axes, results.items()):
    curves = result["curves"]
    for label, rows in curves.items():
      steps = [r["step"] for r in rows]
      row[0].plot(steps, [r["modes_hit"] for r in rows], marker="o", ms=3, label=label)
      row[1].plot(steps, [r["hq_fraction"] for r in rows], marker="o", ms=3, label=label)
    num_modes = next(iter(curves.values()))[0]["num_modes"]
    row[0].set(xlabel="train step", ylabel="modes hit", ylim=(0, num_modes + 0.5),
               title=f"{dataset}: modes hit (of {num_modes})")
    row[1].set(xlabel="train step", ylabel="HQ fraction", ylim=(0, 1),
               title=f"{dataset}: samples within 3 std of a mode")
    row[0].legend(fontsize=8)
  fig.suptitle("GAN vs WGAN-GP mode coverage over training (EMA generator, fixed sampling key)",
               fontsize=9)
  return common.save_figure(fig, path)


def run(out_dir: str, *, quick: bool) -> dict:
  """Train / reuse the four runs, then compute and draw out_dir/gan_coverage.{png,json}."""
  root = common.work_root(out_dir, NAME, quick)
  settings = QUICK if quick else FULL
  results = {}
  for dataset in DATASETS[:1] if quick else DATASETS:
    curves, finals = {}, {}
    for name, module, label in RUNS:
      workdir = os.path.join(root, f"{name}_{dataset}")
      summary = common.train_cached(
          make_config(module, dataset, settings["steps"], settings["every"], quick=quick), workdir)
      finals[label] = {k: summary[k] for k in FINAL_KEYS if k in summary}
      curves[label] = coverage_curve(workdir)
    results[dataset] = {"final": finals, "curves": curves}
  data = {**settings, "quick": quick, "datasets": results}
  outputs = common.write_outputs(out_dir, NAME, data, lambda png: plot(png, results))
  return {**outputs,
          "final_modes_hit": {d: {label: f.get("modes_hit") for label, f in r["final"].items()}
                              for d, r in results.items()}}
