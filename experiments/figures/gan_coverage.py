"""Mode coverage over training: non-saturating GAN vs WGAN-GP on Gaussian-mixture toy sets.

Trains configs/gan_toy.py (non-saturating GAN, Goodfellow et al. 2014) and
configs/wgan_gp_toy.py (WGAN-GP, Gulrajani et al. 2017: lambda = 10, n_critic = 5)
with the same steps, batch and seed, keeping a checkpoint every `every` steps,
then measures mode coverage (research/metrics/modes.py: modes hit = modes with
>= 0.2 n / K samples within 3 std, HQ fraction, KL to uniform) of the EMA
generator at every kept checkpoint with one fixed sampling key.

Registry figure (python -m launch.figures gan_coverage): ring8 and grid25 (ring8
only with --quick) in one 2 x 2 figure, OUT/gan_coverage.{png,json}, runs cached
under OUT/_work/gan_coverage.
The older single-dataset command writes OUT/gan_coverage.png and .json (ring8) or
OUT/gan_coverage_<dataset>.png and .json, workdirs under WORKROOT/<name>_<dataset>:

  python -m experiments.figures.gan_coverage --dataset=ring8 --steps=3000 --every=250
"""

from __future__ import annotations

import argparse
import json
import os

import jax

from configs import gan_toy, wgan_gp_toy
from experiments import checkpoint, configuration, trainer
from experiments.figures import common

NAME = "gan_coverage"
RUNS = (("gan", gan_toy, "non-saturating GAN"), ("wgan_gp", wgan_gp_toy, "WGAN-GP"))
DATASETS = ("ring8", "grid25")
FULL = {"steps": 3000, "every": 250}
QUICK = {"steps": 600, "every": 150}   # runlocal models (2 x 32 MLPs), ring8 only (4 runs: ~30 s)
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


def train(module, dataset: str, steps: int, every: int, workdir: str) -> dict:
  """Train (or resume) one run for the single-dataset command."""
  return trainer.train_and_evaluate(make_config(module, dataset, steps, every), workdir)


def plot(path: str, curves: dict, dataset: str) -> str:
  """Single-dataset figure: modes hit and HQ fraction over training (the older command)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
  for label, rows in curves.items():
    steps = [r["step"] for r in rows]
    axes[0].plot(steps, [r["modes_hit"] for r in rows], marker="o", ms=3, label=label)
    axes[1].plot(steps, [r["hq_fraction"] for r in rows], marker="o", ms=3, label=label)
  num_modes = next(iter(curves.values()))[0]["num_modes"]
  axes[0].set(xlabel="train step", ylabel="modes hit", ylim=(0, num_modes + 0.5),
              title=f"modes hit (of {num_modes})")
  axes[1].set(xlabel="train step", ylabel="HQ fraction", ylim=(0, 1),
              title="samples within 3 std of a mode")
  axes[0].legend()
  fig.suptitle(f"Mode coverage on {dataset} (EMA generator, 2000 samples)")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def plot_all(path: str, results: dict) -> str:
  """Registry figure: one row per dataset, modes hit and HQ fraction over training."""
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
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def run(out_dir: str, *, quick: bool) -> dict:
  """Train / reuse the four runs, then compute and draw out_dir/gan_coverage.{png,json}."""
  png, json_path = common.paths(out_dir, NAME)
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
  common.write_json(json_path, data)
  plot_all(png, results)
  return {"png": png, "json": json_path,
          "final_modes_hit": {d: {label: f.get("modes_hit") for label, f in r["final"].items()}
                              for d, r in results.items()}}


def make(dataset: str = "ring8", steps: int = 3000, every: int = 250, out: str = "figures",
         workroot: str = "/tmp/gan_coverage") -> dict:
  """The older single-dataset figure (see the module docstring)."""
  os.makedirs(out, exist_ok=True)
  curves, finals = {}, {}
  for name, module, label in RUNS:
    workdir = os.path.join(workroot, f"{name}_{dataset}")
    summary = train(module, dataset, steps, every, workdir)
    finals[label] = {k: summary[k] for k in FINAL_KEYS if k in summary}
    curves[label] = coverage_curve(workdir)
  stem = os.path.join(out, "gan_coverage" if dataset == "ring8" else f"gan_coverage_{dataset}")
  result = {"dataset": dataset, "steps": steps, "every": every, "final": finals, "curves": curves,
            "png": plot(stem + ".png", curves, dataset)}
  with open(stem + ".json", "w") as f:
    json.dump(result, f, indent=2)
  return result


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dataset", default="ring8")
  parser.add_argument("--steps", type=int, default=3000)
  parser.add_argument("--every", type=int, default=250)
  parser.add_argument("--out", default="figures")
  parser.add_argument("--workroot", default="/tmp/gan_coverage")
  a = parser.parse_args()
  print(json.dumps(make(a.dataset, a.steps, a.every, a.out, a.workroot)["final"], indent=2))
