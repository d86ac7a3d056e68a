"""Mode coverage over training: non-saturating GAN vs WGAN-GP on a Gaussian-mixture toy set.

Trains configs/gan_toy.py and configs/wgan_gp_toy.py (same steps, batch and
seed) keeping a checkpoint every `every` steps, then measures mode coverage
(research/metrics/modes.py: modes hit, HQ fraction, KL to uniform) of the EMA
generator at every kept checkpoint with one fixed sampling key. Writes
OUT/gan_coverage.png and .json (ring8) or
OUT/gan_coverage_<dataset>.png and .json. Workdirs live under WORKROOT/<name>_<dataset>;
a rerun reuses finished runs (the workdir is the only state).

  python -m experiments.figures.gan_coverage --dataset=ring8 --steps=3000 --every=250
"""

from __future__ import annotations

import argparse
import json
import os

import jax

from configs import gan_toy, wgan_gp_toy
from experiments import checkpoint, configuration, trainer

RUNS = (("gan", gan_toy, "non-saturating GAN"), ("wgan_gp", wgan_gp_toy, "WGAN-GP"))


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


def train(module, dataset: str, steps: int, every: int, workdir: str) -> dict:
  config = module.get_config(f"dataset={dataset},steps={steps},plot_every=0")
  config.train.checkpoint_every = every
  config.train.keep_every = every
  config.log.progress = False
  return trainer.train_and_evaluate(config, workdir)


def plot(path: str, curves: dict, dataset: str) -> str:
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


def make(dataset: str = "ring8", steps: int = 3000, every: int = 250, out: str = "figures",
         workroot: str = "/tmp/gan_coverage") -> dict:
  os.makedirs(out, exist_ok=True)
  curves, finals = {}, {}
  for name, module, label in RUNS:
    workdir = os.path.join(workroot, f"{name}_{dataset}")
    summary = train(module, dataset, steps, every, workdir)
    finals[label] = {k: summary[k] for k in ("step", "modes_hit", "hq_fraction", "mode_kl",
                                             "w2", "w2_noise_floor", "w2_ratio") if k in summary}
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
