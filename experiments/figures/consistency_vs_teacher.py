"""Few-step consistency models vs their diffusion teacher on a 2-D toy set (W2 to the data).

Trains (or reuses, the workdir is the only state) three runs on the same dataset:
  teacher  configs/ddpm_toy.py            (DDPM eps-model, linear betas, T = 1000)
  ict      configs/consistency_toy.py mode=ict   (consistency training, no teacher)
  cd       configs/consistency_toy.py mode=cd    (distilled from the teacher, Heun, N = 18)
then samples every run's EMA params with fixed keys -- the teacher with DPM-Solver++(2M)
at 10 and 20 NFE, the consistency models at 1 and 2 NFE -- and measures the exact W2
(research.metrics.distances.wasserstein2) to fresh data draws of the same size, over
several seeds, next to the noise floor W2(data, data), and the squared energy distance
on larger draws (less noisy than W2 at n = 1000). Writes OUT/consistency_vs_teacher_<dataset>.json
and .png (scatter panels).

  python -m experiments.figures.consistency_vs_teacher --dataset=moons --workroot=/tmp/cm_fig
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

from configs import consistency_toy, ddpm_toy
from experiments import sampling, trainer
from research.metrics import distances


def _train(config, workdir: str) -> dict:
  config.log.progress = False
  t0 = time.perf_counter()
  summary = trainer.train_and_evaluate(config, workdir)
  return {**summary, "wall_s": time.perf_counter() - t0}


def train_all(dataset: str, workroot: str, *, teacher_steps: int, ict_steps: int,
              cd_steps: int) -> dict:
  """Train (or resume / reuse) the teacher, the iCT and the CD runs; returns their workdirs."""
  dirs = {name: os.path.join(workroot, f"{name}_{dataset}") for name in ("teacher", "ict", "cd")}
  _train(ddpm_toy.get_config(f"dataset={dataset},steps={teacher_steps}"), dirs["teacher"])
  _train(consistency_toy.get_config(f"dataset={dataset},mode=ict,steps={ict_steps}"), dirs["ict"])
  _train(consistency_toy.get_config(f"dataset={dataset},mode=cd,steps={cd_steps},"
                                    f"teacher={dirs['teacher']}"), dirs["cd"])
  return dirs


METHODS = (  # (label, run, sampler options)
    ("teacher dpm_solver++ 10 NFE", "teacher", {"sampler": "dpm_solver++", "num_steps": 10}),
    ("teacher dpm_solver++ 20 NFE", "teacher", {"sampler": "dpm_solver++", "num_steps": 20}),
    ("iCT 1 step", "ict", {"num_steps": 1}),
    ("iCT 2 steps", "ict", {"num_steps": 2}),
    ("CD 1 step", "cd", {"num_steps": 1}),
    ("CD 2 steps", "cd", {"num_steps": 2}),
)


def compare(dirs: dict, *, num_samples: int = 1000, seeds: int = 5,
            energy_samples: int = 4000) -> tuple:
  """W2 (n = num_samples) and energy distance (n = energy_samples) of each method's samples
  to fresh data draws (the same reference draws for every method), per seed."""
  loaded = {name: sampling.load(d) for name, d in dirs.items()}
  dataset = loaded["teacher"][0].dataset
  big = max(num_samples, energy_samples)
  root = jax.random.key(2024)
  refs = [np.asarray(dataset.sample(jax.random.fold_in(root, 2 * s), big)) for s in range(seeds)]
  energy = jax.jit(distances.energy_distance)

  def scores(x, s):
    x = np.asarray(x).reshape(big, -1)
    return (float(distances.wasserstein2(x[:num_samples], refs[s][:num_samples])),
            float(energy(x[:energy_samples], refs[s][:energy_samples])))

  floor = [scores(dataset.sample(jax.random.fold_in(root, 2 * s + 1), big), s)
           for s in range(seeds)]
  rows, samples = [], {}
  for label, name, options in METHODS:
    run, state = loaded[name]
    w2, en, nfe = [], [], None
    for s in range(seeds):
      x, stats = trainer.sample(run, state["ema_params"], big, seed_offset=100 + s, **options)
      nfe = int(stats["nfe"])
      w, e = scores(x, s)
      w2.append(w)
      en.append(e)
      if s == 0:
        samples[label] = np.asarray(x)[:num_samples]
    rows.append({"method": label, "nfe": nfe, "w2_mean": float(np.mean(w2)),
                 "w2_std": float(np.std(w2)), "w2": w2,
                 "w2_ratio": float(np.mean(w2) / np.mean([f[0] for f in floor])),
                 "energy_mean": float(np.mean(en)), "energy_std": float(np.std(en))})
  result = {"rows": rows, "noise_floor_mean": float(np.mean([f[0] for f in floor])),
            "noise_floor": [f[0] for f in floor],
            "energy_floor_mean": float(np.mean([f[1] for f in floor])),
            "num_samples": num_samples, "energy_samples": energy_samples, "seeds": seeds,
            "steps": {n: int(loaded[n][1]["step"]) for n in loaded}}
  return result, samples, refs[0][:num_samples]


def plot(path: str, samples: dict, reference, title: str) -> str:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  panels = [("data", reference), *samples.items()]
  fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9), squeeze=False)
  lo, hi = np.percentile(reference, 0.5, axis=0) - 0.6, np.percentile(reference, 99.5, axis=0) + 0.6
  for ax, (name, pts) in zip(axes[0], panels):
    ax.scatter(pts[:, 0], pts[:, 1], s=1.5, alpha=0.5)
    ax.set_title(name, fontsize=8)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--dataset", default="moons")
  p.add_argument("--workroot", default="/tmp/consistency_vs_teacher")
  p.add_argument("--out", default="figures")
  p.add_argument("--teacher_steps", type=int, default=4000)
  p.add_argument("--ict_steps", type=int, default=20000)
  p.add_argument("--cd_steps", type=int, default=20000)
  p.add_argument("--num_samples", type=int, default=1000)
  p.add_argument("--seeds", type=int, default=5)
  p.add_argument("--energy_samples", type=int, default=4000)
  args = p.parse_args()
  dirs = train_all(args.dataset, args.workroot, teacher_steps=args.teacher_steps,
                   ict_steps=args.ict_steps, cd_steps=args.cd_steps)
  result, samples, ref = compare(dirs, num_samples=args.num_samples, seeds=args.seeds,
                                 energy_samples=args.energy_samples)
  result.update(dataset=args.dataset, workdirs=dirs)
  os.makedirs(args.out, exist_ok=True)
  stem = os.path.join(args.out, f"consistency_vs_teacher_{args.dataset}")
  result["png"] = plot(stem + ".png", samples, ref,
                       f"{args.dataset}: W2 (n={args.num_samples}), noise floor "
                       f"{result['noise_floor_mean']:.3f}")
  with open(stem + ".json", "w") as f:
    json.dump(result, f, indent=2)
  for r in result["rows"]:
    print(f"{r['method']:30s} nfe={r['nfe']:3d}  W2 = {r['w2_mean']:.3f} +- {r['w2_std']:.3f}"
          f"  ({r['w2_ratio']:.2f}x floor)  energy = {r['energy_mean']:.4f} +- {r['energy_std']:.4f}")
  print(f"noise floor W2 = {result['noise_floor_mean']:.3f}, energy "
        f"{result['energy_floor_mean']:.4f}; wrote {stem}.json/.png")


if __name__ == "__main__":
  main()
