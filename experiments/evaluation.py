"""Evaluation of finished runs: sample quality against fresh data, with the metric's noise floor.

Points (toy data): W2 / MMD / energy distance vs a fresh draw and the W2 of two
data draws (the floor). Images: Fréchet distance, precision / recall in the
feature space of the project's digits classifier (and class accuracy of
class-conditional samples). Runs with num_seeds replicas report mean and std.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

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


def _heldout_size(dataset) -> int:
  test = getattr(dataset, "test", None)
  return int(test.shape[0]) if test is not None else 10_000


def _evaluate_replica(run, workdir: str, params, replica: int, step: int, plot: bool) -> dict:
  """Metrics of one replica's EMA params (sample quality + the family's own metrics)."""
  from experiments import trainer
  config = run.config
  n = config.eval.num_samples
  options = {}
  labels = None
  if run.conditional:
    labels = jnp.arange(n, dtype=jnp.int32) % run.family.num_classes
    options = {"labels": labels}
  t0 = time.perf_counter()
  x, stats = trainer.sample(run, params, n, replica=replica, **options)
  x = jax.block_until_ready(x)
  summary = {"sample_seconds": time.perf_counter() - t0,
             **{k: (float(v) if np.ndim(v) == 0 else v) for k, v in stats.items()}}
  eval_key = jax.random.fold_in(run.keys_of(replica)["eval"], step)
  if len(run.dataset.shape) == 1:
    summary.update(sample_quality(eval_key, x, run.dataset))
  elif len(run.dataset.shape) == 3:
    summary.update(image_metrics(jax.random.fold_in(eval_key, 3), x, run.dataset, labels))
  if hasattr(run.family, "evaluate"):  # family-specific metrics (held-out ELBO, mode coverage, ...)
    summary.update(run.family.evaluate(params, jax.random.fold_in(eval_key, 1), run.dataset))
  if plot:
    path = trainer._plot(run, workdir, x, step)
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


def evaluate_run(run, workdir: str, state, compile_s: float) -> dict:
  """Evaluate a finished run's EMA params (every replica); write WORKDIR/eval.json."""
  from experiments import logs, trainer
  step = trainer.current_step(state)
  per_replica = [
      _evaluate_replica(run, workdir, trainer.replica_params(run, state["ema_params"], i), i,
                        step, plot=i == 0)
      for i in range(run.num_seeds)]
  summary = per_replica[0] if run.num_seeds == 1 else aggregate_replicas(per_replica)
  summary = {"status": "done", "step": step, "num_samples": run.config.eval.num_samples,
             "sampler": run.config.get("sample", {}).get("sampler"), "num_seeds": run.num_seeds,
             "train_compile_s": compile_s, **summary}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "eval.json"), "w") as f:
      json.dump(summary, f, indent=2)
    logs.MetricWriter(workdir).write(step, {f"eval/{k}": v for k, v in summary.items()
                                            if isinstance(v, (int, float))}, event="eval")
  return summary
