"""Sampling and re-evaluation of a trained workdir (what launch.sample / launch.evaluate run).

`prepare` does every check a user can fail (the workdir, its config, the request
against the family and the sampler registry, the replica, a checkpoint to read)
and restores the checkpoint, compiling nothing; `sample_to_file` and
`evaluate_to_file` then do the work. Reading is safe while a training process
holds the workdir: orbax publishes a checkpoint by renaming a finished temporary
directory, so the newest listed step is complete; a step that still fails to read
is skipped for the next older one (a reader never moves or deletes anything).
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import numpy as np
from absl import logging

from experiments import checkpoint, configuration, distributed, evaluation
from experiments import run as run_lib
from experiments import workdir as workdir_lib
from experiments.families.protocol import SampleRequest


@dataclasses.dataclass
class Job:
  """A restored workdir and a checked request, ready to sample or evaluate."""
  workdir: str
  run: run_lib.Run
  state: dict
  request: SampleRequest
  replica: int = 0

  @property
  def step(self) -> int:
    return run_lib.current_step(self.state)


def _config(workdir: str):
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"workdir {workdir} does not exist or is not a directory (no "
                            f"config.json of a training run there)")
  if not os.path.exists(os.path.join(workdir, "config.json")):
    raise FileNotFoundError(f"{workdir} is not a training workdir (no config.json)")
  return configuration.load_json(workdir)


def restore_readonly(workdir: str, run: run_lib.Run, step: int | None = None,
                     attempts: int = 5) -> dict:
  """The newest checkpoint that restores (or `step`), without changing the workdir.

  A training process may delete old steps (retention) while this reads: a step that
  vanishes, or fails to read, is skipped for the next older one, and the listing is
  retried (up to `attempts` times) when steps vanish under it.
  """
  errors = []
  for _ in range(attempts):
    try:
      manager = checkpoint.make_manager(workdir, every=run.config.train.checkpoint_every,
                                        async_save=False)
      steps = sorted(manager.all_steps(), reverse=True) if step is None else [step]
    except FileNotFoundError as e:  # a step deleted while the manager listed it
      errors.append(f"listing: {e}")
      time.sleep(0.1)
      continue
    try:
      if not steps:
        raise FileNotFoundError(
            f"no checkpoint to read under {os.path.join(workdir, 'checkpoints')} (train first: "
            f"python -m launch.train ... --workdir={workdir})")
      for s in steps:
        try:
          return checkpoint.restore(manager, run.abstract_state, s)[0]
        except Exception as e:  # a damaged or vanished step: try the next older one  # noqa: BLE001
          errors.append(f"step {s}: {type(e).__name__}")
          logging.warning("checkpoint step %d of %s cannot be read (%s); trying an older one",
                          s, workdir, e)
    finally:
      manager.close()
  raise FileNotFoundError(f"no checkpoint under {workdir}/checkpoints can be read "
                          f"({'; '.join(errors[-4:])})")


def prepare(workdir: str, request: SampleRequest | None, *, replica: int = 0,
            num_samples: int | None = None, run: run_lib.Run | None = None) -> Job:
  """Check everything a user can get wrong, then restore; ValueError / OSError name the problem."""
  if run is None:
    run = run_lib.build(_config(workdir))
  request = SampleRequest.of(request)
  if isinstance(replica, bool) or not isinstance(replica, int) or not 0 <= replica < run.num_seeds:
    raise ValueError(f"replica must be in [0, {run.num_seeds}) for this run, got {replica!r}")
  run_lib.check_request(run, request, num_samples)
  state = restore_readonly(workdir, run)
  return Job(workdir, run, state, request, replica)


def load(workdir: str, step: int | None = None):
  """(run, state) of a workdir: its config and its latest (or given) checkpoint."""
  run = run_lib.build(_config(workdir))
  return run, restore_readonly(workdir, run, step)


def sample_to_file(job: Job | str, out: str, *, num_samples: int, seed: int = 0,
                   replica: int = 0, **request_fields) -> dict:
  """Sample the job's EMA params into the .npy file `out`; returns a JSON-able summary.

  job: a prepared Job, or a workdir path with the SampleRequest fields as keywords.
  """
  if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
    raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
  if isinstance(job, str):
    job = prepare(job, SampleRequest.of(None, **request_fields), replica=replica,
                  num_samples=num_samples)
  elif request_fields:
    raise ValueError(f"request fields {sorted(request_fields)} go into prepare(), not with a Job")
  t0 = time.perf_counter()
  params = distributed.host_local(
      run_lib.replica_params(job.run, job.state["ema_params"], job.replica))
  x, stats = run_lib.sample(job.run, params, num_samples, job.request, seed_offset=seed,
                            replica=job.replica)
  x = np.asarray(jax.block_until_ready(x))
  seconds = time.perf_counter() - t0
  path = os.path.abspath(out if out.endswith(".npy") else out + ".npy")  # np.save's rule
  if distributed.is_primary():   # every process drew the same samples
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, x)
  info = {"out": path, "shape": list(x.shape), "step": job.step, "seconds": seconds,
          **{k: np.asarray(v).tolist() for k, v in stats.items()}}
  if getattr(job.run.family, "kind", None) == "text":   # the samples as text, one per line
    texts = job.run.family.to_text(x)
    text_path = path[:-len(".npy")] + ".txt"
    if distributed.is_primary():
      workdir_lib.atomic_write_text(text_path, "\n".join(texts) + "\n")
    info.update(text_out=text_path, text=texts[:10])
  return info


def eval_filename(run: run_lib.Run, request: SampleRequest) -> str:
  """eval_<tag>.json with the family's `describe(request)` tag (e.g. an adaptive solver or a
  decoder: its name); else eval_<sampler>_<num_steps>.json; eval_default.json for a family
  without samplers (GAN, VAE). A guidance scale given in the request adds _w<scale>
  (eval_dpm_solver++_25_w2.json), so evaluating several scales keeps every result."""
  suffix = "" if request.guidance_scale is None else f"_w{float(request.guidance_scale):g}"
  if hasattr(run.family, "describe"):
    return f"eval_{run.family.describe(request)}{suffix}.json"
  sample = run.config.get("sample", None)
  sampler = request.sampler or (sample.get("sampler") if sample is not None else None)
  if not sampler:
    return f"eval_default{suffix}.json"
  return f"eval_{sampler}_{request.num_steps or sample.num_steps}{suffix}.json"


def evaluate_to_file(job: Job, *, num_samples: int | None = None) -> dict:
  """Evaluate the job's EMA params with its request (every replica) into
  WORKDIR/eval_<sampler>_<num_steps>.json; eval.json and metrics.jsonl are not touched."""
  run = job.run
  if num_samples is not None:
    with run.config.unlocked():
      run.config.eval.num_samples = int(num_samples)
  summary = evaluation.evaluate(run, job.state, job.request)
  summary["options"] = {k: v for k, v in dict(job.request.given()).items() if k != "labels"}
  path = os.path.join(job.workdir, eval_filename(run, job.request))
  if distributed.is_primary():
    workdir_lib.atomic_write_json(path, summary, default=_plain)
  return {"out": path, **summary}


def _plain(value):
  value = np.asarray(value)
  return value.item() if value.ndim == 0 else value.tolist()
