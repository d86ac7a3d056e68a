"""Few-step consistency models vs their diffusion teacher on a 2-D toy set (W2 to the data).

Trains (or reuses) on moons, each with its own config:
  teacher  configs/ddpm_toy.py            (DDPM eps-model, linear betas, T = 1000; Ho et al. 2020)
  ict      configs/consistency_toy.py mode=ict   (improved consistency training, no teacher;
           Song & Dhariwal 2023)
  cd       configs/consistency_toy.py mode=cd    (consistency distillation from the teacher,
           Heun, N = 18; Song et al. 2023; not with --quick)
then samples every run's EMA params with fixed keys -- the teacher with DPM-Solver++(2M)
at several NFE, the consistency models at 1 and 2 steps -- and measures the exact W2
(research.metrics.distances.wasserstein2) to fresh data draws of the same size, over
several seeds, next to the noise floor W2(data, data), and the squared energy distance
on larger draws (experiments.figures.common.ReferenceScores). Drawn by
`python -m launch.figures consistency_vs_teacher [--quick]`: W2 and energy distance vs
NFE plus sample scatters in OUT/consistency_vs_teacher.{png,json}, runs cached under
OUT/_work/consistency_vs_teacher.
"""

from __future__ import annotations

import os

import numpy as np

from configs import consistency_toy, ddpm_toy
from experiments import sampling
from experiments.figures import common

NAME = "consistency_vs_teacher"
DATASET = "moons"
FULL_STEPS = {"teacher": 4000, "ict": 20000, "cd": 20000}
TEACHER_NFES = {True: (2, 10), False: (2, 3, 5, 10, 20)}   # quick, full
QUICK_SAMPLES = 200
QUICK_STEPS = 1000   # runlocal (2 x 32) MLPs


CONSISTENCY_METHODS = (  # (label, run, sampler options)
    ("iCT 1 step", "ict", {"num_steps": 1}),
    ("iCT 2 steps", "ict", {"num_steps": 2}),
    ("CD 1 step", "cd", {"num_steps": 1}),
    ("CD 2 steps", "cd", {"num_steps": 2}),
)


def registry_configs(dataset: str, workroot: str, quick: bool) -> dict:
  """name -> (workdir, config) of the teacher, iCT and CD runs (runlocal models when quick;
  quick skips CD, a third training)."""
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
  return teacher + tuple(m for m in CONSISTENCY_METHODS if not (quick and m[1] == "cd"))


def compare(dirs: dict, methods: tuple, *, num_samples: int = 1000, seeds: int = 5,
            energy_samples: int = 4000) -> tuple:
  """W2 (n = num_samples) and energy distance (n = energy_samples) of each method's samples
  to fresh data draws (the same reference draws for every method), per seed."""
  loaded = {name: sampling.load(d) for name, d in dirs.items()}
  scorer = common.ReferenceScores(loaded["teacher"][0].dataset, num_samples=num_samples,
                                  energy_samples=energy_samples, seeds=seeds)
  floor = scorer.floor
  rows, samples = [], {}
  for label, name, options in methods:
    run, state = loaded[name]
    values, nfes, samples[label] = scorer.sample(run, state["ema_params"], **options)
    w2, en = values[:, 0].tolist(), values[:, 1]
    rows.append({"method": label, "nfe": nfes[-1], "w2_mean": float(np.mean(w2)),
                 "w2_std": float(np.std(w2)), "w2": w2,
                 "w2_ratio": float(np.mean(w2) / np.mean(floor[:, 0])),
                 "energy_mean": float(np.mean(en)), "energy_std": float(np.std(en))})
  result = {"rows": rows, "noise_floor_mean": float(np.mean(floor[:, 0])),
            "noise_floor": floor[:, 0].tolist(),
            "energy_floor_mean": float(np.mean(floor[:, 1])),
            "num_samples": num_samples, "energy_samples": energy_samples, "seeds": seeds,
            "steps": {n: int(loaded[n][1]["step"]) for n in loaded}}
  return result, samples, scorer.refs[0][:num_samples]


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
    common.log_nfe_axes(ax, [r["nfe"] for r in result["rows"]])
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
  return common.save_figure(fig, path)


def run(out_dir: str, *, quick: bool) -> dict:
  """Train / reuse teacher, iCT and CD, then compute and draw out_dir/consistency_vs_teacher.*."""
  root = common.work_root(out_dir, NAME, quick)
  dirs, reused = {}, {}
  for name, (workdir, config) in registry_configs(DATASET, root, quick).items():
    reused[name] = common.train_cached(config, workdir)["reused"]
    dirs[name] = workdir
  result, samples, ref = compare(dirs, registry_methods(quick),
                                 num_samples=QUICK_SAMPLES if quick else 1000,
                                 seeds=1 if quick else 5,
                                 energy_samples=QUICK_SAMPLES if quick else 4000)
  result.update(dataset=DATASET, workdirs=dirs, quick=quick, reused=reused,
                samples=samples, reference=ref)
  outputs = common.write_outputs(out_dir, NAME, result,
                                 lambda png: plot_registry(png, result, samples, ref))
  return {**outputs, "reused": reused,
          "w2": {r["method"]: round(r["w2_mean"], 4) for r in result["rows"]},
          "w2_floor": result["noise_floor_mean"]}
