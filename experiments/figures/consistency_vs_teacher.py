"""Few-step consistency models vs their diffusion teacher on a 2-D toy set (W2 to the data).

Registry figure (python -m launch.figures consistency_vs_teacher [--quick]): moons,
the teacher with DPM-Solver++(2M) at several NFE against iCT and CD (not with
--quick) at 1 and 2 steps,
W2 and energy distance vs NFE plus sample scatters, written to
OUT/consistency_vs_teacher.{png,json}, runs cached under OUT/_work/consistency_vs_teacher.
The older command below (one dataset, fixed methods) is kept unchanged.

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
from experiments.figures import common
from research.metrics import distances

NAME = "consistency_vs_teacher"
DATASET = "moons"
FULL_STEPS = {"teacher": 4000, "ict": 20000, "cd": 20000}
TEACHER_NFES = {True: (2, 10), False: (2, 3, 5, 10, 20)}   # quick, full
QUICK_SAMPLES = 200
QUICK_STEPS = 1000   # runlocal (2 x 32) MLPs: under a second of training each


def _train(config, workdir: str) -> dict:
  config.log.progress = False
  t0 = time.perf_counter()
  summary = trainer.train_and_evaluate(config, workdir)
  return {**summary, "wall_s": time.perf_counter() - t0}


def train_all(dataset: str, workroot: str, *, teacher_steps: int, ict_steps: int,
              cd_steps: int) -> dict:
  """Train (or resume / reuse) the teacher, the iCT and the CD runs; returns their workdirs.

  (The older command's trainer: resumes whatever its workdirs hold.)
  """
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


def registry_configs(dataset: str, workroot: str, quick: bool) -> dict:
  """name -> (workdir, config) of the teacher, iCT and CD runs (runlocal models when quick;
  quick skips CD, a third training that would take quick mode past ~30 s)."""
  dirs = {name: os.path.join(workroot, f"{name}_{dataset}") for name in ("teacher", "ict", "cd")}
  if quick:
    teacher = ddpm_toy.get_config(f"dataset={dataset},runlocal=true,sampler=dpm_solver++,"
                                  "sample_steps=10")
    ict = consistency_toy.get_config(f"dataset={dataset},mode=ict,runlocal=true")
    for config in (teacher, ict):   # one sample size everywhere: shared W2 compiles
      config.eval.num_samples = QUICK_SAMPLES
      config.eval.plot_samples = QUICK_SAMPLES
      config.train.num_steps = config.train.checkpoint_every = QUICK_STEPS
      config.train.num_devices = 1   # one device compiles fastest (tests fake 8)
    return {"teacher": (dirs["teacher"], teacher), "ict": (dirs["ict"], ict)}
  teacher = ddpm_toy.get_config(f"dataset={dataset},steps={FULL_STEPS['teacher']}")
  ict = consistency_toy.get_config(f"dataset={dataset},mode=ict,steps={FULL_STEPS['ict']}")
  cd = consistency_toy.get_config(f"dataset={dataset},mode=cd,steps={FULL_STEPS['cd']},"
                                  f"teacher={dirs['teacher']}")
  return {"teacher": (dirs["teacher"], teacher), "ict": (dirs["ict"], ict),
          "cd": (dirs["cd"], cd)}


def registry_methods(quick: bool) -> tuple:
  """(label, run, sampler options): the teacher at TEACHER_NFES, iCT (and CD unless quick)
  at 1 and 2 steps."""
  teacher = tuple((f"teacher dpm_solver++ {n} NFE", "teacher",
                   {"sampler": "dpm_solver++", "num_steps": n}) for n in TEACHER_NFES[quick])
  return teacher + tuple(m for m in METHODS[2:] if not (quick and m[1] == "cd"))


def compare(dirs: dict, *, num_samples: int = 1000, seeds: int = 5,
            energy_samples: int = 4000, methods: tuple = METHODS) -> tuple:
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
  for label, name, options in methods:
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


def plot_registry(path: str, result: dict, samples: dict, reference) -> str:
  """Top: W2 and energy distance vs NFE (teacher line, iCT / CD at 1 and 2 steps); bottom:
  scatters of the data, the teacher at its largest NFE and the consistency models."""
  import matplotlib.pyplot as plt
  groups = {"teacher (DPM-Solver++ 2M)": "teacher", "iCT": "iCT", "CD": "CD"}
  groups = {g: p for g, p in groups.items()
            if any(r["method"].startswith(p) for r in result["rows"])}
  shown = [label for label in samples if not label.startswith("teacher")]
  shown.insert(0, max((label for label in samples if label.startswith("teacher")),
                      key=lambda label: int(label.split()[-2])))
  panels = [("data", reference)] + [(label, samples[label]) for label in shown]
  fig = plt.figure(figsize=(max(11.0, 2.4 * len(panels)), 6.4))
  grid = fig.add_gridspec(2, len(panels), height_ratios=(1.2, 1))
  half = len(panels) // 2
  for i, (metric, floor, title) in enumerate((
      ("w2_mean", result["noise_floor_mean"], f"W2, n = {result['num_samples']}"),
      ("energy_mean", result["energy_floor_mean"],
       f"squared energy distance, n = {result['energy_samples']}"))):
    ax = fig.add_subplot(grid[0, :half] if i == 0 else grid[0, half:])
    for group, prefix in groups.items():
      rows = [r for r in result["rows"] if r["method"].startswith(prefix)]
      std = metric.replace("_mean", "_std")
      ax.errorbar([r["nfe"] for r in rows], [r[metric] for r in rows],
                  yerr=[r[std] for r in rows], marker="o", ms=4, capsize=2, label=group)
    ax.axhline(floor, color="k", ls=":", lw=1, label="data vs data (floor)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    nfes = sorted({r["nfe"] for r in result["rows"]})
    ax.set_xticks(nfes, [str(n) for n in nfes])
    ax.minorticks_off()
    ax.set(xlabel="NFE", title=f"{title} (mean ± std, {result['seeds']} seed(s))")
    ax.title.set_fontsize(9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
  lo = np.percentile(reference, 0.5, axis=0) - 0.6
  hi = np.percentile(reference, 99.5, axis=0) + 0.6
  for j, (label, pts) in enumerate(panels):
    ax = fig.add_subplot(grid[1, j])
    ax.scatter(pts[:, 0], pts[:, 1], s=1.5, alpha=0.5)
    ax.set_title(label, fontsize=8)
    ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), xticks=[], yticks=[])
    ax.set_aspect("equal")
  steps = ", ".join(f"{name} {step}" for name, step in result["steps"].items())
  fig.suptitle(f"consistency models vs their diffusion teacher on {result['dataset']} "
               f"(training steps: {steps})", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def run(out_dir: str, *, quick: bool) -> dict:
  """Train / reuse teacher, iCT and CD, then compute and draw out_dir/consistency_vs_teacher.*."""
  png, json_path = common.paths(out_dir, NAME)
  root = common.work_root(out_dir, NAME, quick)
  dirs, reused = {}, {}
  for name, (workdir, config) in registry_configs(DATASET, root, quick).items():
    reused[name] = common.train_cached(config, workdir)["reused"]
    dirs[name] = workdir
  result, samples, ref = compare(dirs, num_samples=QUICK_SAMPLES if quick else 1000,
                                 seeds=1 if quick else 5,
                                 energy_samples=QUICK_SAMPLES if quick else 4000,
                                 methods=registry_methods(quick))
  result.update(dataset=DATASET, workdirs=dirs, quick=quick, reused=reused,
                samples=samples, reference=ref)
  common.write_json(json_path, result)
  plot_registry(png, result, samples, ref)
  return {"png": png, "json": json_path, "reused": reused,
          "w2": {r["method"]: round(r["w2_mean"], 4) for r in result["rows"]},
          "w2_floor": result["noise_floor_mean"]}


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
