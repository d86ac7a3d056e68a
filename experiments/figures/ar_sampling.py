"""Temperature and top-p sweep of the class-conditional autoregressive digits model.

Registry figure (python -m launch.figures ar_sampling [--quick]), the decoding analogue of
the guidance sweep (experiments/figures/cfg_sweep.py). Trains (or reuses)
configs/ar_digits.py:cond=true (a transformer over the 64 grey-level tokens of an 8x8
digit, the label as the first token) and samples its EMA params with the ancestral
decoder, each token drawn from the filtered softmax

    p_T(v) = softmax(l / T)_v                            (temperature T),
    top-p:  keep the smallest set S of most probable tokens with sum_{v in S} p_T(v) >= p,
            renormalise p_T on S (Holtzman et al. 2020),

at T in {0.3 ... 1.5} with p = 1 and at p in {0.3 ... 1} with T = 1. Labels are 0..9 in
turn; per setting and seed (the same seeds at every setting) the digits classifier
(assets/digits_classifier) scores

  class accuracy      fraction of samples classified as the label they were drawn for;
  intra-class spread  mean pairwise distance of the classifier features of samples of one
                      label, averaged over labels, over the same for the held-out digits
                      (cfg_sweep.intra_class_spread; 1 = as varied as data);
  FD / precision / recall / coverage  against the held-out split
                      (experiments.image_metrics.image_quality);
  sample bits/dim     -log2 p(x) / 64 of the samples under the unfiltered model (T = 1,
                      p = 1): the mean is the model's entropy rate at T = p = 1 and falls
                      as the filters sharpen the distribution;
  train copies        fraction of samples equal, token for token, to a training image.

The filters are data for the compiled decoder (experiments/families/autoregressive.py
passes them as arrays), so the whole sweep compiles the decode loop once: `compiles`
counts the new entries of its jit cache and `seconds` times each setting's first seed.

`adopt(source)` makes a finished run of exactly this config (a user's `launch.train`
workdir) the figure's cached run, so the figure samples it instead of training its own:

  python -c "from experiments.figures import ar_sampling; ar_sampling.adopt('RUN')"
  python -m launch.figures ar_sampling ar_samples
"""

from __future__ import annotations

import json
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import ar_digits
from experiments import image_metrics, plotting, sampling, trainer
from experiments.families.autoregressive import Autoregressive
from experiments.families.protocol import SampleRequest
from experiments.figures import common
from experiments.figures.cfg_sweep import intra_class_spread

NAME = "ar_sampling"
RUN = "ar_digits_cond"                 # the cached run under OUT/_work/ar_sampling[_quick]
TEMPERATURES = (0.3, 0.5, 0.7, 0.85, 1.0, 1.2, 1.5)
TOP_PS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0)
QUICK_TEMPERATURES = (0.3, 1.0, 1.5)
QUICK_TOP_PS = (0.5, 1.0)
GRID_TEMPERATURES = (0.3, 1.0, 1.5)    # the sample grids of the figure (when swept)
METRICS = ("class_accuracy", "intra_class_spread", "fd", "precision", "recall", "coverage",
           "sample_bits_per_dim", "train_copy_fraction")
TABLE_METRICS = ("class_accuracy", "intra_class_spread", "fd", "precision", "recall",
                 "coverage", "sample_bits_per_dim", "train_copy_fraction")
PER_CLASS = 10                         # images per label kept for the grids


def make_config(quick: bool, *, cond: bool = True):
  """configs/ar_digits.py (cond=true by default); quick: 2 layers, dropout 0.1, lr 3e-3, EMA
  decay 0.99, 600 steps."""
  arg = "cond=true" if cond else ""
  if not quick:
    return ar_digits.get_config(arg)
  config = ar_digits.get_config(",".join(filter(None, (arg, "layers=2,dropout=0.1,steps=600"))))
  config.optim.update(lr=3e-3, warmup_steps=50)
  config.ema_decay = 0.99        # 0.999 ** 600 = 0.55: the EMA would still be half the init
  config.train.update(checkpoint_every=600, log_every=150)
  config.eval.num_samples = 100
  config.eval.plot_samples = 16
  config.train.num_devices = 1   # one device compiles fastest (tests fake 8)
  return config


def settings(temperatures=TEMPERATURES, top_ps=TOP_PS) -> list[dict]:
  """The sweep's rows: {"control", "value", "temperature", "top_p"}, temperatures at p = 1
  then top-p values at T = 1."""
  for t in temperatures:
    if not float(t) > 0:
      raise ValueError(f"temperatures must be > 0 (0 is greedy: one sample per label), got "
                       f"{tuple(temperatures)}")
  for p in top_ps:
    if not 0 < float(p) <= 1:
      raise ValueError(f"top_ps must lie in (0, 1], got {tuple(top_ps)}")
  return ([{"control": "temperature", "value": float(t), "temperature": float(t), "top_p": 1.0}
           for t in temperatures] +
          [{"control": "top_p", "value": float(p), "temperature": 1.0, "top_p": float(p)}
           for p in top_ps])


def copy_fraction(tokens, train_tokens) -> float:
  """Fraction of the rows of tokens (n, D) equal to some row of train_tokens (m, D)."""
  tokens, train_tokens = np.asarray(tokens), np.asarray(train_tokens)
  if tokens.ndim != 2 or train_tokens.ndim != 2 or tokens.shape[1] != train_tokens.shape[1]:
    raise ValueError(f"tokens and train_tokens must be (n, D) and (m, D), got shapes "
                     f"{tokens.shape} and {train_tokens.shape}")
  seen = {row.tobytes() for row in np.ascontiguousarray(train_tokens, np.int32)}
  rows = np.ascontiguousarray(tokens, np.int32)
  return float(np.mean([row.tobytes() in seen for row in rows]))


def sample_bits_per_dim(family, params, x, labels) -> np.ndarray:
  """Per-sample -log2 p(x) / D under the family's unfiltered model (T = 1, p = 1)."""
  inputs, targets, _ = family.sequences((jnp.asarray(x), jnp.asarray(labels)))
  logp = family.model_log_probs(params, np.asarray(inputs), np.asarray(targets))
  return -logp.sum(1) / (logp.shape[1] * np.log(2.0))


def grid_of(x, labels, num_classes: int, per: int = PER_CLASS) -> np.ndarray:
  """(K, per, H, W, C): the first `per` images drawn for each label."""
  x, labels = np.asarray(x), np.asarray(labels)
  return np.stack([x[labels == c][:per] for c in range(num_classes)])


def _decode_cache_size() -> int:
  return Autoregressive._decode._cache_size()


def sweep(workdir: str, temperatures=TEMPERATURES, top_ps=TOP_PS, *, num_samples: int = 1000,
          seeds: int = 3) -> dict:
  """Metrics of a class-conditional AR digits run's EMA samples per (T, p) setting and seed.

  Returns {"rows": [settings() row + <metric>_mean, <metric>_std, <metric>: per seed,
  "seconds": the first seed's sampling time], "samples": {"T=.. p=..": first 10 images per
  label of seed 0}, "reference_spread", "compiles", "test_bits_per_dim", "step", ...}.
  A setting in both sweeps (T = 1, p = 1) is sampled once.
  """
  rows = settings(temperatures, top_ps)
  if num_samples < 20:
    raise ValueError(f"num_samples must be >= 20 (two per class), got {num_samples}")
  if seeds < 1:
    raise ValueError(f"seeds must be >= 1, got {seeds}")
  run, state = sampling.load(workdir)
  family = run.family
  if family.name != "autoregressive" or family.kind != "image":
    raise ValueError(f"workdir={workdir!r} holds a {family.name} run on "
                     f"{run.config.data.name}; this sweep needs an autoregressive image run")
  if not family.conditional:
    raise ValueError(f"workdir={workdir!r} holds an unconditional run (model.num_classes = 0)")
  k, dataset, params = family.num_classes, run.dataset, state["ema_params"]
  reference = dataset.to_unit(jnp.asarray(dataset.test))
  ref_spread = intra_class_spread(image_metrics.classifier_features(reference),
                                  dataset.test_labels, k)
  train_tokens = np.asarray(family.tokens_of_images(jnp.asarray(dataset.train)))
  labels = jnp.arange(num_samples, dtype=jnp.int32) % k
  done, samples = {}, {}
  cache_before = _decode_cache_size()
  for row in rows:
    key = (row["temperature"], row["top_p"])
    if key not in done:
      request = SampleRequest(options=f"temperature={key[0]},top_p={key[1]}", labels=labels)
      per_seed, seconds = {m: [] for m in METRICS}, None
      for s in range(seeds):
        t0 = time.perf_counter()
        x, _ = trainer.sample(run, params, num_samples, request, seed_offset=1000 + s)
        x = jax.block_until_ready(x)
        if s == 0:
          seconds = time.perf_counter() - t0
        unit = dataset.to_unit(x)
        quality = image_metrics.image_quality(unit, reference, labels=labels)
        features = image_metrics.classifier_features(unit)
        quality["intra_class_spread"] = intra_class_spread(features, labels, k) / ref_spread
        quality["sample_bits_per_dim"] = float(np.mean(sample_bits_per_dim(family, params, x,
                                                                           labels)))
        quality["train_copy_fraction"] = copy_fraction(family.tokens_of_images(x), train_tokens)
        for m in METRICS:
          per_seed[m].append(float(quality[m]))
        if s == 0:
          samples[f"T={key[0]:g} p={key[1]:g}"] = np.round(grid_of(unit, labels, k), 4)
      done[key] = {"seconds": seconds}
      for m in METRICS:
        done[key].update({m: per_seed[m], f"{m}_mean": float(np.mean(per_seed[m])),
                          f"{m}_std": float(np.std(per_seed[m]))})
    row.update(done[key])
  summary = _eval_summary(workdir)
  return {"rows": rows, "samples": samples, "reference_spread": ref_spread,
          "compiles": _decode_cache_size() - cache_before, "num_samples": num_samples,
          "seeds": seeds, "step": int(np.asarray(state["step"])), "workdir": workdir,
          "test_bits_per_dim": summary.get("test_bits_per_dim"),
          "train_bits_per_dim": summary.get("train_bits_per_dim")}


def _eval_summary(workdir: str) -> dict:
  path = os.path.join(workdir, "eval.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _curves(ax, rows, control: str, xlabel: str, seeds: int) -> None:
  rows = [r for r in rows if r["control"] == control]
  x = [r["value"] for r in rows]
  for m, label in (("class_accuracy", "class accuracy"),
                   ("intra_class_spread", "intra-class spread (data = 1)"),
                   ("precision", "precision"), ("recall", "recall"), ("coverage", "coverage")):
    ax.errorbar(x, [r[f"{m}_mean"] for r in rows], yerr=[r[f"{m}_std"] for r in rows],
                marker="o", ms=4, capsize=2, label=label)
  ax.set(xlabel=xlabel, title=f"vs {xlabel} (mean ± std, {seeds} seed(s))")
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=7)


def grid_keys(result: dict) -> list[str]:
  """The sample grids the figure shows: T = 0.3, 1, 1.5 at p = 1 when swept, else the
  smallest and largest swept temperature."""
  temps = [r["value"] for r in result["rows"] if r["control"] == "temperature"]
  chosen = [t for t in GRID_TEMPERATURES if t in temps] or sorted({min(temps), max(temps)})
  return [f"T={t:g} p=1" for t in chosen]


def plot(path: str, result: dict) -> str:
  """Top: metrics vs T (p = 1) and vs p (T = 1); bottom: sample grids at low, unit and high
  temperature (row k drawn for label k)."""
  import matplotlib.pyplot as plt
  keys = grid_keys(result)
  fig = plt.figure(figsize=(max(12, 4 * len(keys)), 9))
  grid = fig.add_gridspec(2, 2 * len(keys), height_ratios=(1, 1.1))
  half = len(keys)
  for i, (control, xlabel) in enumerate((("temperature", "temperature T"),
                                         ("top_p", "top-p"))):
    _curves(fig.add_subplot(grid[0, i * half:(i + 1) * half]), result["rows"], control, xlabel,
            result["seeds"])
  for j, key in enumerate(keys):
    ax = fig.add_subplot(grid[1, 2 * j:2 * j + 2])
    imgs = np.asarray(result["samples"][key])       # (K, n, S, S, 1): row k = label k
    tile = plotting.tile_images(imgs.reshape(-1, *imgs.shape[2:]), columns=imgs.shape[1])
    ax.imshow(tile[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set(xticks=[], yticks=[], title=f"{key.split()[0]}, top-p 1 (rows: labels 0-9)")
  fig.suptitle(f"temperature and top-p on the conditional AR digits model (step "
               f"{result['step']}, {result['num_samples']} samples per setting; the decode "
               f"loop compiled {result['compiles']}x for the sweep)", fontsize=10)
  return common.save_figure(fig, path)


def table(result: dict) -> str:
  """The sweep as a Markdown table (mean ± std over seeds), temperature rows then top-p."""
  cols = TABLE_METRICS
  head = ("train copies" if m == "train_copy_fraction" else m for m in cols)
  lines = ["| T | top-p | " + " | ".join(head) + " |", "|---" * (len(cols) + 2) + "|"]
  for r in result["rows"]:
    cells = [f"{r[f'{m}_mean']:.3f} ± {r[f'{m}_std']:.3f}" for m in cols]
    lines.append(f"| {r['temperature']:g} | {r['top_p']:g} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def timing(result: dict) -> str:
  """One line: compiles of the decode loop during the sweep and the seconds per setting."""
  seconds = [r["seconds"] for r in result["rows"]]
  return (f"decode loop compiled {result['compiles']}x for {len(seconds)} settings; first "
          f"setting {seconds[0]:.2f} s, the others {min(seconds[1:] or seconds):.2f}-"
          f"{max(seconds[1:] or seconds):.2f} s ({result['num_samples']} samples each)")


def adopt(source: str, out_dir: str = "figures", *, quick: bool = False, cond: bool = True,
          force: bool = False) -> bool:
  """Copy the finished run `source`, trained from exactly make_config(quick, cond=cond)
  (the log settings aside), into this figure's cache OUT/_work/ar_sampling[_quick]/RUN.

  Returns True when it copied; False when the cache already holds a finished run (unless
  force) or `source` is not a finished run of that config (nothing is changed then).
  """
  config = make_config(quick, cond=cond)
  config.log.progress = False                        # as common.train_cached writes it
  workdir = cache_dir(out_dir, quick, cond=cond)
  if not force and cached_summary(out_dir, quick, cond=cond) is not None:
    return False
  try:
    with open(os.path.join(source, "config.json")) as f:
      theirs = json.load(f)
    with open(os.path.join(source, "eval.json")) as f:
      summary = json.load(f)
  except FileNotFoundError:
    return False
  mine = json.loads(config.to_json_best_effort(sort_keys=True))
  same = {k: v for k, v in theirs.items() if k != "log"} == {
      k: v for k, v in mine.items() if k != "log"}
  if not same or summary.get("status") != "done" or summary.get("step") != config.train.num_steps:
    return False
  if os.path.exists(workdir):
    shutil.rmtree(workdir)
  shutil.copytree(source, workdir, ignore=shutil.ignore_patterns(".lock"))
  common.write_json(os.path.join(workdir, "config.json"), mine)
  return True


def cache_dir(out_dir: str, quick: bool, *, cond: bool = True) -> str:
  """OUT/_work/ar_sampling[_quick]/ar_digits[_cond]: the figures' conditional (unconditional)
  digits run, shared by ar_sampling and ar_samples."""
  return os.path.join(common.work_root(out_dir, NAME, quick),
                      RUN if cond else RUN.replace("_cond", ""))


def cached_summary(out_dir: str, quick: bool, *, cond: bool = True) -> dict | None:
  """The eval summary of the cached run when it is finished (nothing is trained), else None."""
  config = make_config(quick, cond=cond)
  config.log.progress = False                        # as common.train_cached writes it
  return common.finished_summary(config, cache_dir(out_dir, quick, cond=cond))


def cached_run(out_dir: str, quick: bool, *, cond: bool = True) -> tuple[str, bool]:
  """(workdir, reused) of the cached run, trained first unless finished."""
  workdir = cache_dir(out_dir, quick, cond=cond)
  return workdir, common.train_cached(make_config(quick, cond=cond), workdir)["reused"]


def run(out_dir: str, *, quick: bool) -> dict:
  """Train / reuse the conditional AR digits model, sweep T and p, write
  out_dir/ar_sampling.{png,json}; the summary's `table` is the Markdown table and the
  timing line (launch.figures prints it)."""
  workdir, reused = cached_run(out_dir, quick)
  result = sweep(workdir, QUICK_TEMPERATURES if quick else TEMPERATURES,
                 QUICK_TOP_PS if quick else TOP_PS, num_samples=200 if quick else 1000,
                 seeds=1 if quick else 3)
  result.update(quick=quick, reused=reused)
  outputs = common.write_outputs(out_dir, NAME, result, lambda png: plot(png, result))
  return {**outputs, "reused": reused, "compiles": result["compiles"],
          "class_accuracy": {f"T={r['temperature']:g} p={r['top_p']:g}":
                             round(r["class_accuracy_mean"], 3) for r in result["rows"]},
          "table": table(result) + "\n\n" + timing(result)}
