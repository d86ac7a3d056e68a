"""Classifier-free guidance scale sweep on class-conditional digits: diversity vs class accuracy.

Registry figure (python -m launch.figures cfg_sweep [--quick]). Trains (or reuses)
configs/ddpm_digits.py:cond=true (U-Net eps-model, label dropout 0.1, so one network
is both conditional and unconditional), then samples its EMA params with
DPM-Solver++(2M), 25 steps, at guidance scales w (Ho & Salimans 2022)

    eps_w(x, t, y) = eps(x, t, null) + w (eps(x, t, y) - eps(x, t, null)),

w = 0 unconditional, w = 1 the plain conditional model, w > 1 extrapolated. Labels are
0..9 in turn; per w and seed the digits classifier (assets/digits_classifier) scores

  class accuracy      fraction of samples classified as the label they were drawn for;
  intra-class spread  mean pairwise distance of the classifier features of samples drawn for
                      the same label, averaged over labels, divided by the same quantity for
                      the held-out digits grouped by their true label (1 = as varied as data);
  FD / recall / coverage  against the held-out split (experiments.image_metrics.image_quality).

Guidance trades diversity for fidelity: accuracy rises with w while intra-class spread and
recall fall. `run_workdir` sweeps any class-conditional run on a digits data set instead
(the features come from the digits classifier; the reference is the run's held-out split):

  python -m launch.figures cfg_sweep --workdir=RUN [--scales=0,1,2,4] [--seeds=3]
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np

from configs import ddpm_digits
from experiments import evaluation, image_metrics, plotting, sampling, trainer
from experiments.figures import common

NAME = "cfg_sweep"
SCALES = (0.0, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
QUICK_SCALES = (0.0, 1.0, 4.0)
METRICS = ("class_accuracy", "intra_class_spread", "fd", "recall", "coverage", "precision")


def make_config(quick: bool):
  """configs/ddpm_digits.py:cond=true (a 16-channel U-Net, batch 64, 1000 steps when quick)."""
  if not quick:
    return ddpm_digits.get_config("cond=true")
  config = ddpm_digits.get_config("cond=true,channels=16,batch=64,steps=1000")
  config.train.checkpoint_every = 1000
  config.eval.num_samples = 100
  config.eval.plot_samples = 16
  config.train.num_devices = 1   # one device compiles fastest (tests fake 8)
  return config


def intra_class_spread(features, labels, num_classes: int) -> float:
  """Mean over classes of the mean pairwise Euclidean distance among that class's features."""
  features, labels = np.asarray(features, np.float64), np.asarray(labels)
  spreads = []
  for c in range(num_classes):
    f = features[labels == c]
    if len(f) < 2:
      continue
    d = np.sqrt(np.maximum(((f[:, None, :] - f[None, :, :]) ** 2).sum(-1), 0.0))
    spreads.append(d.sum() / (len(f) * (len(f) - 1)))
  if not spreads:
    raise ValueError("labels must give at least one class with two or more samples")
  return float(np.mean(spreads))


def sweep(workdir: str, scales=SCALES, *, num_samples: int = 1000, seeds: int = 3,
          sampler: str | None = None, num_steps: int | None = None) -> dict:
  """Metrics of a conditional run's EMA samples at each guidance scale, per seed.

  Returns {"scales", "rows": [{"scale", <metric>_mean, <metric>_std, <metric>: per seed}],
  "reference_spread", "samples": {scale: first 10 images per label of seed 0}, "step"}.
  """
  if num_samples < 20:
    raise ValueError(f"num_samples must be >= 20 (two per class), got {num_samples}")
  if seeds < 1:
    raise ValueError(f"seeds must be >= 1, got {seeds}")
  if any(float(w) < 0 for w in scales):
    raise ValueError(f"scales must be >= 0, got {tuple(scales)}")
  run, state = sampling.load(workdir)
  if not run.conditional:
    raise ValueError(f"workdir={workdir!r} holds an unconditional run (model.num_classes = 0)")
  k = run.family.num_classes
  dataset = evaluation.pixel_dataset(run.dataset)   # latent runs: samples come decoded
  reference = dataset.to_unit(jnp.asarray(dataset.test))
  ref_features = image_metrics.classifier_features(reference)
  ref_spread = intra_class_spread(ref_features, dataset.test_labels, k)
  labels = jnp.arange(num_samples, dtype=jnp.int32) % k
  rows, samples = [], {}
  for w in scales:
    per_seed = {m: [] for m in METRICS}
    for s in range(seeds):
      x, _ = trainer.sample(run, state["ema_params"], num_samples, seed_offset=1000 + s,
                            labels=labels, guidance_scale=float(w), sampler=sampler,
                            num_steps=num_steps)
      x = dataset.to_unit(x)
      quality = image_metrics.image_quality(x, reference, labels=labels)
      features = image_metrics.classifier_features(x)
      quality["intra_class_spread"] = intra_class_spread(features, labels, k) / ref_spread
      for m in METRICS:
        per_seed[m].append(float(quality[m]))
      if s == 0:   # up to 10 images per label, (K, n, H, W, C)
        per = min(10, num_samples // k)
        xs, ys = np.asarray(x), np.asarray(labels)
        samples[str(float(w))] = np.round(np.stack([xs[ys == c][:per] for c in range(k)]), 3)
    row = {"scale": float(w)}
    for m in METRICS:
      row.update({m: per_seed[m], f"{m}_mean": float(np.mean(per_seed[m])),
                  f"{m}_std": float(np.std(per_seed[m]))})
    rows.append(row)
  return {"scales": [float(w) for w in scales], "rows": rows, "reference_spread": ref_spread,
          "samples": samples, "num_samples": num_samples, "seeds": seeds,
          "step": int(np.asarray(state["step"])), "workdir": workdir}


def plot(path: str, result: dict) -> str:
  """Left: class accuracy, intra-class spread, recall, coverage vs w; middle: the trade-off
  curve (precision vs recall, w annotated); right: sample grids at the smallest and largest w."""
  import matplotlib.pyplot as plt
  rows = result["rows"]
  w = [r["scale"] for r in rows]
  fig = plt.figure(figsize=(14, 4.2))
  grid = fig.add_gridspec(1, 4, width_ratios=(1.2, 1.2, 1, 1))
  ax = fig.add_subplot(grid[0])
  for m, label in (("class_accuracy", "class accuracy"),
                   ("intra_class_spread", "intra-class spread (data = 1)"),
                   ("recall", "recall"), ("coverage", "coverage")):
    ax.errorbar(w, [r[f"{m}_mean"] for r in rows], yerr=[r[f"{m}_std"] for r in rows],
                marker="o", ms=4, capsize=2, label=label)
  ax.set(xlabel="guidance scale w", title=f"vs w (mean ± std, {result['seeds']} seed(s))")
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=7)
  ax = fig.add_subplot(grid[1])
  precision = [r["precision_mean"] for r in rows]
  recall = [r["recall_mean"] for r in rows]
  ax.plot(recall, precision, "o-")
  for i, (wi, rc, pr) in enumerate(zip(w, recall, precision)):
    ax.annotate(f"w={wi:g}", (rc, pr), textcoords="offset points",
                xytext=(4, -11 if i % 2 else 5), fontsize=7)
  ax.set(xlabel="recall (diversity)", ylabel="precision (fidelity)",
         title="the guidance trade-off (k-NN, k = 5)")
  ax.grid(True, alpha=0.3)
  for j, key in enumerate((str(w[0]), str(w[-1]))):
    ax = fig.add_subplot(grid[2 + j])
    imgs = np.asarray(result["samples"][key])       # (K, n, S, S, 1): row k = label k
    tile = plotting.tile_images(imgs.reshape(-1, *imgs.shape[2:]), columns=imgs.shape[1])
    ax.imshow(tile[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set(xticks=[], yticks=[], title=f"w = {float(key):g} (rows: labels 0-9)")
  fig.suptitle(f"classifier-free guidance on conditional digits DDPM (step {result['step']}, "
               f"{result['num_samples']} samples per w)", fontsize=10)
  return common.save_figure(fig, path)


def table(result: dict) -> str:
  """The sweep as a Markdown table (mean ± std over seeds)."""
  cols = ("class_accuracy", "intra_class_spread", "fd", "precision", "recall", "coverage")
  lines = ["| w | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
  for r in result["rows"]:
    cells = [f"{r[f'{m}_mean']:.3f} ± {r[f'{m}_std']:.3f}" for m in cols]
    lines.append(f"| {r['scale']:g} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _summary(outputs: dict, result: dict) -> dict:
  return {**outputs, "reused": result.get("reused"),
          "class_accuracy": {r["scale"]: round(r["class_accuracy_mean"], 3)
                             for r in result["rows"]},
          "intra_class_spread": {r["scale"]: round(r["intra_class_spread_mean"], 3)
                                 for r in result["rows"]}}


def run(out_dir: str, *, quick: bool) -> dict:
  """Train / reuse the conditional digits DDPM, sweep w, write out_dir/cfg_sweep.{png,json}."""
  workdir = os.path.join(common.work_root(out_dir, NAME, quick), "ddpm_digits_cond")
  reused = common.train_cached(make_config(quick), workdir)["reused"]
  result = sweep(workdir, QUICK_SCALES if quick else SCALES,
                 num_samples=100 if quick else 1000, seeds=1 if quick else 3)
  result.update(quick=quick, reused=reused)
  return _summary(common.write_outputs(out_dir, NAME, result, lambda png: plot(png, result)),
                  result)


def run_workdir(workdir: str, out_dir: str, *, scales=(0.0, 1.0, 2.0, 4.0),
                num_samples: int = 1000, seeds: int = 3) -> dict:
  """Sweep an existing class-conditional digits run: out_dir/cfg_sweep.{png,json}, and the
  summary with the sweep's Markdown `table` (python -m launch.figures cfg_sweep --workdir=RUN)."""
  result = sweep(workdir, tuple(float(w) for w in scales), num_samples=num_samples, seeds=seeds)
  outputs = common.write_outputs(out_dir, NAME, result, lambda png: plot(png, result))
  return {**_summary(outputs, result), "table": table(result)}
