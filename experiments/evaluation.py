"""Evaluation of finished runs: sample quality against fresh data, with the metric's noise floor.

Points (toy data): W2 / MMD / energy distance vs a fresh draw and the W2 of two
data draws (the floor). Images: Fréchet distance, precision / recall in the
feature space of the project's digits classifier (and class accuracy of
class-conditional samples). Text: the family's own metrics only (held-out NLL,
novelty; its `evaluate` hook). Runs with num_seeds replicas report mean and std.

    summary = evaluate(run, state_or_params, SampleRequest(...))    # a dict; writes nothing
    summary = evaluate_run(run, workdir, state, compile_s)          # + plots, eval.json
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import distributed
from experiments import run as run_lib
from experiments.families.protocol import SampleRequest
from research.metrics import distances


def sample_quality(key: jax.Array, samples: jax.Array, dataset) -> dict:
  """W2 / MMD / energy distance of `samples` to a fresh data draw of the same size.

  w2_noise_floor is W2 between two independent data draws of that size: the value
  a perfect model would get. w2_ratio = w2 / w2_noise_floor (1 is perfect).
  """
  n = samples.shape[0]
  k_ref, k_floor = jax.random.split(key)
  ref = dataset.sample(k_ref, n).reshape(n, -1)
  other = dataset.sample(k_floor, n).reshape(n, -1)
  flat = samples.reshape(n, -1)
  w2 = float(distances.wasserstein2(flat, ref))
  floor = float(distances.wasserstein2(other, ref))
  return {
      "w2": w2,
      "w2_noise_floor": floor,
      "w2_ratio": w2 / floor,
      "mmd": float(distances.mmd(flat, ref)),
      "energy": float(distances.energy_distance(flat, ref)),
  }


def image_metrics(key: jax.Array, samples: jax.Array, dataset, labels=None) -> dict:
  """Fréchet distance / precision / recall (and class accuracy) of image samples.

  Features come from the project's digits classifier (experiments.image_metrics);
  the reference is the held-out split. Samples are mapped to [0, 1] first.
  Returns {} for data the classifier does not cover (more than one channel).
  """
  if dataset.shape[-1] != 1 or not hasattr(dataset, "heldout"):
    return {}
  from experiments import image_metrics as image_metrics_lib
  n = min(samples.shape[0], _heldout_size(dataset))
  reference = dataset.to_unit(dataset.heldout(key, n))
  out = image_metrics_lib.image_quality(dataset.to_unit(samples[:n]), reference,
                                        labels=None if labels is None else labels[:n])
  return {k: float(v) for k, v in out.items()}


def pixel_dataset(dataset):
  """The set samples are scored against: a latent set's pixels (run.sample decodes the
  latents, experiments/latent.py), else the dataset itself."""
  return dataset.pixels if getattr(dataset, "modality", None) == "latents" else dataset


def modality_of(dataset) -> str | None:
  """dataset.modality ("points" | "images" | "text"), else read off the example shape."""
  default = {1: "points", 3: "images"}.get(len(dataset.shape))
  return getattr(dataset, "modality", default)


def _heldout_size(dataset) -> int:
  test = getattr(dataset, "test", None)
  return int(test.shape[0]) if test is not None else 10_000


def plot_samples(run, workdir: str, samples, step: int) -> str | None:
  """WORKDIR/samples_<step>.png: 2-D scatter beside a data draw, or an image grid (process 0)."""
  dataset = pixel_dataset(run.dataset)
  if jax.process_index() != 0 or modality_of(dataset) == "text":
    return None   # text samples are written by the family's figures hook
  from experiments import run_figures
  path = os.path.join(workdir, f"samples_{step:07d}.png")
  title = f"{run.config.family} on {run.config.data.name}, step {step}"
  if dataset is not run.dataset:
    title += " (latent, decoded)"
  reference = None
  if tuple(dataset.shape) == (2,):
    reference = dataset.sample(jax.random.fold_in(run.keys_of(0)["eval"], step),
                               samples.shape[0])
  return run_figures.sample_plot(path, samples, reference=reference,
                                 to_unit=getattr(dataset, "to_unit", None), title=title)


def evaluate_params(run, params, request: SampleRequest | None = None, *, replica: int = 0,
                    step: int = 0, workdir: str | None = None, plot: bool = False) -> dict:
  """Metrics of one replica's params: config.eval.num_samples samples drawn with `request`
  (None: the config's defaults), their quality, and the family's own metrics; with `plot`
  and a workdir also the sample plot and the family's figures."""
  request = SampleRequest.of(request)
  n = run.config.eval.num_samples
  run.family.check_request(request, n)
  labels = None
  if run.conditional:   # class accuracy needs the labels the samples were drawn for
    labels = (jnp.arange(n, dtype=jnp.int32) % run.family.num_classes if request.labels is None
              else jnp.asarray(request.labels, jnp.int32))
    request = SampleRequest.of(request, labels=labels)
  t0 = time.perf_counter()
  x, stats = run_lib.sample(run, params, n, request, replica=replica)
  x = jax.block_until_ready(x)
  summary = {"sample_seconds": time.perf_counter() - t0,
             **{k: (float(v) if np.ndim(v) == 0 else v) for k, v in stats.items()}}
  eval_key = jax.random.fold_in(run.keys_of(replica)["eval"], step)
  scored = pixel_dataset(run.dataset)   # latent runs: decoded samples vs the pixel set
  modality = modality_of(scored)
  if modality == "points":
    summary.update(sample_quality(eval_key, x, scored))
  elif modality == "images":
    summary.update(image_metrics(jax.random.fold_in(eval_key, 3), x, scored, labels))
  if hasattr(run.family, "sample_metrics"):  # family metrics of these samples (text novelty)
    summary.update(run.family.sample_metrics(x))
  if hasattr(run.family, "evaluate"):  # family-specific metrics (held-out ELBO, mode coverage, ...)
    summary.update(run.family.evaluate(params, jax.random.fold_in(eval_key, 1), run.dataset))
  if plot and workdir is not None:
    path = plot_samples(run, workdir, x, step)
    if path:
      summary["plot"] = path
    if hasattr(run.family, "figures") and jax.process_index() == 0:  # e.g. latent grids
      summary["figures"] = run.family.figures(params, jax.random.fold_in(eval_key, 2), workdir, step)
  return summary


def aggregate_replicas(per_replica: list[dict]) -> dict:
  """Replica 0's summary with every scalar metric replaced by the mean over replicas.

  Adds `<metric>_std` (population std over replicas) and "per_seed": {metric: values}.
  """
  out = dict(per_replica[0])
  per_seed = {}
  for key, value in per_replica[0].items():
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      values = [float(r[key]) for r in per_replica]
      per_seed[key] = values
      out[key] = float(np.mean(values))
      out[key + "_std"] = float(np.std(values))
  out["per_seed"] = per_seed
  return out


def evaluate(run, state_or_params, request: SampleRequest | None = None, *,
             step: int | None = None, workdir: str | None = None, plot: bool = False) -> dict:
  """The evaluation summary of every replica (mean / std / per_seed for num_seeds > 1).

  state_or_params: a train state (its "ema_params" and "step" are used) or params.
  request: how to sample (None: the config's defaults); refused fields raise ValueError
  before anything is sampled. Writes nothing unless plot and workdir are given (plots only).
  """
  if isinstance(state_or_params, dict) and "ema_params" in state_or_params:
    params = state_or_params["ema_params"]
    step = run_lib.current_step(state_or_params) if step is None else step
  else:
    params, step = state_or_params, 0 if step is None else step
  request = SampleRequest.of(request)
  run.family.check_request(request, run.config.eval.num_samples)
  # Multi-process: every process evaluates the same local copy (identical results);
  # process 0 writes them.
  params = distributed.host_local(params)
  per_replica = [
      evaluate_params(run, run_lib.replica_params(run, params, i), request, replica=i, step=step,
                      workdir=workdir, plot=plot and i == 0)
      for i in range(run.num_seeds)]
  summary = per_replica[0] if run.num_seeds == 1 else aggregate_replicas(per_replica)
  return {"status": "done", "step": step, "num_samples": run.config.eval.num_samples,
          "sampler": request.sampler or run.config.get("sample", {}).get("sampler"),
          "num_seeds": run.num_seeds, **summary}


def evaluate_run(run, workdir: str, state, compile_s: float | None) -> dict:
  """Evaluate a finished run's EMA params (every replica, config defaults); write
  WORKDIR/eval.json (atomically) and the eval row of metrics.jsonl (once per step: an
  evaluation-only relaunch replaces eval.json but adds no second row); return the summary.
  compile_s: the train step's compile time, None when nothing was trained in this launch."""
  from experiments import logs
  from experiments import workdir as workdir_lib
  summary = evaluate(run, state, workdir=workdir, plot=True)
  step = summary["step"]
  summary = {**{k: summary[k] for k in ("status", "step", "num_samples", "sampler", "num_seeds")},
             "train_compile_s": compile_s, **summary}
  if jax.process_index() == 0:
    workdir_lib.atomic_write_json(os.path.join(workdir, "eval.json"), summary)
    logged = any(r.get("event") == "eval" and r.get("step") == step
                 for r in logs.read_metrics(workdir))
    if not logged:
      logs.MetricWriter(workdir).write(step, {f"eval/{k}": v for k, v in summary.items()
                                              if isinstance(v, (int, float))}, event="eval")
  return summary
