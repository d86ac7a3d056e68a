"""One held-out likelihood table for every family on the 8x8 digits (17 grey levels).

Every model sees the same data: scikit-learn's digits, integer grey levels x in
{0..16}^64 (experiments/data.py loads them as x / 16), trained on the first 1500 images
and scored on the last 297. Each row reports held-out bits/dim with its standard error
over the scored images (std / sqrt(n) of the per-image values), under its own
convention, with its kind (docs/likelihood.md):

  exact     the NLL of the discrete images: the count models (uniform over 17 levels,
            per-pixel marginal, the (position, left, up) neighbour model; fitted on the
            train split by the autoregressive family's `baselines`, which this reuses)
            and the autoregressive transformer (its `evaluate`);
  bound     an upper bound on the discrete NLL: the normalizing flow (the density of
            y = (x + u) / 17 plus 64 log 17 nats, Jensen), the VAE with a categorical
            decoder (IWAE with k = config.vae.nll_k, 1000), and the PF-ODE density of the
            flow-matching and diffusion models with the exact trace (the same
            dequantization; exact up to the solver's tolerance);
  estimate  the same PF-ODE quantity with Hutchinson's trace estimator (unbiased for the
            bound, with extra variance).

Trained rows name a config (`config.configs[model]`, "path:arg"); the workdir
ROOT/<model> is reused when it holds a finished run of exactly that config
(experiments/figures/common.py finished_summary), else trained or resumed through
experiments.trainer.train_and_evaluate. Then the EMA parameters are restored and
scored; "train s" is the training loop plus its compilation (from metrics.jsonl, so a
reused run keeps its time), "eval s" the wall time of the scoring call (compilation
included). The flow-matching and diffusion models are trained on dequantized data
(config.data.dequantize = 17) and scored by their `heldout_bits_per_dim`: Hutchinson on
config.images held-out images (0: all), the exact trace on the first
config.exact_images of them, with the same dequantization noise for both families.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import time

import jax
import numpy as np

from experiments import families, logs, run as run_lib, sampling, trainer
from experiments.data import make_dataset
from experiments.families.autoregressive import Autoregressive
from experiments.figures.common import finished_summary

COLUMNS = ["model", "config", "reports", "kind", "bits/dim", "stderr", "images", "train s",
           "eval s"]
COUNT_MODELS = {"uniform": "uniform over the 17 levels", "marginal": "per-pixel marginal",
                "left_up": "(position, left, up) counts"}
ODE_FAMILIES = ("flow_matching", "diffusion")
KINDS = ("exact", "bound", "estimate")


def load_config(spec: str):
  """ConfigDict of "configs/x.py[:arg]" (None when the file does not exist yet)."""
  path, _, arg = spec.partition(":")
  stem = os.path.splitext(os.path.basename(path))[0]
  if os.path.dirname(os.path.normpath(path)) != "configs":
    raise ValueError(f"config.configs: {spec!r} must name a file configs/<name>.py")
  if importlib.util.find_spec(f"configs.{stem}") is None:
    return None
  return importlib.import_module(f"configs.{stem}").get_config(arg or None)


def train_seconds(workdir: str) -> float:
  """Seconds of the training loop (sum over logged windows of steps / steps_per_sec) plus
  its compilation (compile_s of every start / resume), from WORKDIR/metrics.jsonl."""
  total, last = 0.0, 0
  for row in logs.read_metrics(workdir):
    if row.get("event") in ("start", "resume"):
      total += float(row.get("compile_s") or 0.0)
      last = int(row["step"])
    elif "steps_per_sec" in row and row["steps_per_sec"]:
      total += (int(row["step"]) - last) / float(row["steps_per_sec"])
      last = int(row["step"])
  return total


def train_or_reuse(config, workdir: str) -> dict:
  """{"train_s", "reused"} after making sure WORKDIR holds a finished run of `config`."""
  config.log.progress = False
  reused = finished_summary(config, workdir) is not None
  if not reused:
    summary = trainer.train_and_evaluate(config, workdir)
    if summary.get("status") != "done":
      raise RuntimeError(f"training into {workdir} did not finish: {summary.get('status')}")
  return {"train_s": train_seconds(workdir), "reused": reused}


def _restore(workdir: str):
  run, state = sampling.load(workdir)
  return run, run_lib.replica_params(run, state["ema_params"], 0)


def _timed(fn):
  t0 = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - t0


def count_rows(config, names) -> list[dict]:
  """The count models of the autoregressive family (fitted on train, scored on test)."""
  spec = config.configs.get("ar", "configs/ar_digits.py")
  ar_config = load_config(spec)
  family = Autoregressive(ar_config, make_dataset(ar_config.data))
  summaries, seconds = _timed(family.baselines)
  return [{"model": name, "config": "-", "reports": f"{COUNT_MODELS[name]}, discrete NLL",
           "kind": "exact", "bits/dim": summaries[name].bits,
           "stderr": summaries[name].bits_stderr, "images": summaries[name].examples,
           "train s": None, "eval s": seconds} for name in names]


def _evaluate_row(model, spec, run, params, key, kind, reports, train_s):
  out, seconds = _timed(lambda: run.family.evaluate(params, key, run.dataset))
  for field in ("test_bits_per_dim", "test_bits_per_dim_stderr"):
    if field not in out:
      raise ValueError(f"{model}: the {run.config.family} family's evaluate reports no {field} "
                       f"(config {spec})")
  num = out.get("num_test", len(run.dataset.test))
  return {"model": model, "config": spec, "reports": reports, "kind": kind,
          "bits/dim": float(out["test_bits_per_dim"]),
          "stderr": float(out["test_bits_per_dim_stderr"]), "images": int(num),
          "train s": train_s, "eval s": seconds}


def ode_rows(model, spec, run, params, config, train_s, notes) -> list[dict]:
  """Hutchinson and exact-trace PF-ODE rows of a flow-matching or diffusion model."""
  key = jax.random.key(config.seed)
  options = dict(num_probes=config.probes, rtol=config.tol, atol=config.tol)
  hutch, seconds = _timed(lambda: run.family.heldout_bits_per_dim(
      params, key, run.dataset, num_images=config.images, exact=False, **options))
  rows = [{"model": f"{model} (Hutchinson)", "config": spec,
           "reports": f"PF-ODE, dequantized, Hutchinson {config.probes} probe(s), "
                      f"tol {config.tol:g}, NFE {hutch['nfe_mean']:.0f}",
           "kind": "estimate", "bits/dim": hutch["bits_per_dim"],
           "stderr": hutch["bits_per_dim_stderr"], "images": hutch["num_images"],
           "train s": train_s, "eval s": seconds}]
  if config.exact_images:
    exact, seconds = _timed(lambda: run.family.heldout_bits_per_dim(
        params, key, run.dataset, num_images=config.exact_images, exact=True, **options))
    rows.append({"model": f"{model} (exact trace)", "config": spec,
                 "reports": f"PF-ODE, dequantized, exact trace, tol {config.tol:g}, "
                            f"NFE {exact['nfe_mean']:.0f}",
                 "kind": "bound", "bits/dim": exact["bits_per_dim"],
                 "stderr": exact["bits_per_dim_stderr"], "images": exact["num_images"],
                 "train s": train_s, "eval s": seconds})
    n = exact["num_images"]
    if n <= hutch["num_images"]:   # the same first n images and dequantization noise
      diff = hutch["per_image_bits"][:n] - exact["per_image_bits"]
      se = float(np.std(diff, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
      notes.append(f"{model}: on the {n} exact-trace images Hutchinson gives "
                   f"{np.mean(hutch['per_image_bits'][:n]):.4f} bits/dim, "
                   f"{np.mean(diff):+.4f} +- {se:.4f} from the exact trace (paired); the exact "
                   f"trace costs {exact['seconds'] / n:.2f} s/image, Hutchinson "
                   f"{hutch['seconds'] / hutch['num_images']:.2f} s/image (after compiling)")
  return rows


def model_rows(model, config, notes) -> list[dict]:
  """Train or reuse the model's workdir, then score it."""
  spec = config.configs[model]
  train_config = load_config(spec)
  if train_config is None:
    notes.append(f"{model}: skipped, {spec.partition(':')[0]} does not exist yet")
    return []
  try:
    families.get(train_config.family)
  except (ValueError, ModuleNotFoundError) as e:
    notes.append(f"{model}: skipped, family {train_config.family!r} is not available ({e})")
    return []
  if config.quick:
    path, _, arg = spec.partition(":")
    train_config = load_config(f"{path}:{','.join(filter(None, [arg, 'runlocal=true']))}")
  if config.num_devices:
    train_config.train.num_devices = config.num_devices
  workdir = os.path.join(config.root, model)
  trained = train_or_reuse(train_config, workdir)
  if trained["reused"]:
    notes.append(f"{model}: reused the finished run in {workdir}")
  run, params = _restore(workdir)
  key = jax.random.key(config.seed)
  if model in ODE_FAMILIES:
    return ode_rows(model, spec, run, params, config, trained["train_s"], notes)
  if model == "vae":
    reports = (f"IWAE k={run.config.vae.nll_k}, categorical decoder "
               f"({run.config.vae.levels} levels)")
    return [_evaluate_row(model, spec, run, params, key, "bound", reports, trained["train_s"])]
  if model == "flow":
    reports = "dequantized: NLL of (x + u) / 17 + 64 log 17"
    return [_evaluate_row(model, spec, run, params, key, "bound", reports, trained["train_s"])]
  return [_evaluate_row(model, spec, run, params, key, "exact", "discrete NLL",
                        trained["train_s"])]


def _check(config) -> None:
  for name in ("images", "exact_images"):
    value = config[name]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 297:
      raise ValueError(f"config.{name} must be an integer in [0, 297] (0: "
                       f"{'all' if name == 'images' else 'none'}), got {value!r}")
  if isinstance(config.probes, bool) or not isinstance(config.probes, int) or config.probes < 1:
    raise ValueError(f"config.probes must be an integer >= 1, got {config.probes!r}")
  if not float(config.tol) > 0:
    raise ValueError(f"config.tol must be > 0, got {config.tol!r}")


def run(config) -> dict:
  """The table (module docstring): dict(title, columns, rows, notes, ...)."""
  _check(config)
  notes = [
      "bits/dim of the 297 held-out digits (17 grey levels, 64 dims) unless `images` says "
      "fewer; stderr = std / sqrt(n) over images. exact: discrete NLL; bound: upper bound on "
      "it (dequantization: NLL of y = (x + u) / 17 in [0, 1]^64 plus 64 log 17 nats, models "
      "in [-1, 1] corrected by 64 log 2; VAE: IWAE); estimate: Hutchinson's unbiased "
      "estimate of the PF-ODE bound. docs/likelihood.md.",
  ]
  rows = []
  counts = [m for m in config.models if m in COUNT_MODELS]
  if counts:
    rows += count_rows(config, counts)
    notes.append("count models: fitted and scored in one call (eval s is that call's time)")
  for model in config.models:
    if model not in COUNT_MODELS:
      rows += model_rows(model, config, notes)
  return {"title": "Held-out likelihood on the 8x8 digits (17 grey levels), every family",
          "columns": COLUMNS, "rows": rows, "notes": notes,
          "settings": {"models": list(config.models),
                       **{k: config[k] for k in ("root", "images", "exact_images", "probes",
                                                 "tol", "seed", "quick")}}}
