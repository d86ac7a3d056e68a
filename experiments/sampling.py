"""Sampling from a trained workdir: restore the latest EMA params and draw samples."""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from experiments import checkpoint, configuration, trainer


def load(workdir: str, step: int | None = None):
  """(run, state) restored from workdir's config.json and its latest (or given) checkpoint."""
  config = configuration.load_json(workdir)
  run = trainer.build(config)
  manager = checkpoint.make_manager(workdir, every=config.train.checkpoint_every, async_save=False)
  try:
    if manager.latest_step() is None:
      raise FileNotFoundError(f"no checkpoint under {workdir}/checkpoints")
    state, _ = checkpoint.restore(manager, run.abstract_state, step)
  finally:
    manager.close()
  return run, state


def sample_to_file(workdir: str, out: str, *, num_samples: int, seed: int = 0,
                   sampler: str | None = None, num_steps: int | None = None,
                   replica: int = 0) -> dict:
  """Sample the workdir's EMA params (replica `replica` of a num_seeds run) into an .npy file."""
  if num_samples < 1:
    raise ValueError(f"num_samples must be >= 1, got {num_samples}")
  run, state = load(workdir)
  if not 0 <= replica < run.num_seeds:
    raise ValueError(f"replica must be in [0, {run.num_seeds}), got {replica}")
  options = {k: v for k, v in (("sampler", sampler), ("num_steps", num_steps)) if v is not None}
  t0 = time.perf_counter()
  params = trainer.replica_params(run, state["ema_params"], replica)
  x, stats = trainer.sample(run, params, num_samples, seed_offset=seed, replica=replica, **options)
  x = np.asarray(jax.block_until_ready(x))
  seconds = time.perf_counter() - t0
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  np.save(out, x)
  return {"out": out, "shape": list(x.shape), "step": trainer.current_step(state), "seconds": seconds,
          **{k: (np.asarray(v).tolist()) for k, v in stats.items()}}
