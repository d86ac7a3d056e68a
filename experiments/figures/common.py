"""What every figure module shares: the outputs, cached training, scores against data draws.

A figure NAME writes OUT/NAME.png and OUT/NAME.json (the arrays it plots, as
lists): `write_outputs` writes both, `save_figure` is the tail of every plot.
Figures that need trained models train them with
experiments.trainer.train_and_evaluate into OUT/_work/NAME[_quick]/RUN: the
workdir is the only state, so a finished run (eval.json with status "done" at
the configured number of steps, trained from the same config) is reused, an
interrupted one resumes, and one trained from another config is deleted and
retrained (the cache is the figure's own). `ReferenceScores` scores samples of
2-D toy models against fixed data draws (exact W2 and the squared energy distance,
research.metrics.distances), beside the floor of a second data draw.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np

from experiments import plotting  # noqa: F401  (selects matplotlib's Agg backend)
from research.metrics import distances

WORK = "_work"


def paths(out_dir: str, name: str) -> tuple[str, str]:
  """(OUT/NAME.png, OUT/NAME.json), creating OUT."""
  os.makedirs(out_dir, exist_ok=True)
  stem = os.path.join(out_dir, name)
  return stem + ".png", stem + ".json"


def save_figure(fig, path: str, *, dpi: int = 100, tight: bool = True, **savefig) -> str:
  """fig.tight_layout() (unless tight=False), save to `path`, close the figure; returns path."""
  import matplotlib.pyplot as plt
  if tight:
    fig.tight_layout()
  fig.savefig(path, dpi=dpi, **savefig)
  plt.close(fig)
  return path


def write_outputs(out_dir: str, name: str, data: dict, draw) -> dict:
  """Write OUT/NAME.json (`data`) and OUT/NAME.png (`draw(png_path)`); returns {"png", "json"}."""
  if not callable(draw):
    raise ValueError(f"draw must be a callable png_path -> None, got {draw!r}")
  png, json_path = paths(out_dir, name)
  write_json(json_path, data)
  draw(png)
  return {"png": png, "json": json_path}


def log_nfe_axes(ax, nfes) -> None:
  """Log-2 x axis ticked at the NFE values, log y axis (the error-vs-NFE panels)."""
  nfes = sorted(set(int(n) for n in nfes))
  ax.set_xscale("log", base=2)
  ax.set_yscale("log")
  ax.set_xticks(nfes, [str(n) for n in nfes])


class ReferenceScores:
  """Exact W2 and squared energy distance of samples to fixed data draws, one draw per seed.

  Seed s's reference is dataset.sample(fold_in(key(2024), 2 s), big) with
  big = max(num_samples, energy_samples); a sample x (big points) scores
  (W2 of the first num_samples points, energy distance of the first energy_samples)
  against it. `floor` (seeds, 2) holds the scores of a second data draw
  (fold_in(key(2024), 2 s + 1)): what a perfect model gets at these sizes.
  """

  def __init__(self, dataset, *, num_samples: int, energy_samples: int, seeds: int):
    for arg, value in (("num_samples", num_samples), ("energy_samples", energy_samples),
                       ("seeds", seeds)):
      if int(value) < 1:
        raise ValueError(f"{arg} must be >= 1, got {value}")
    self.num_samples, self.energy_samples, self.seeds = num_samples, energy_samples, seeds
    self.big = max(num_samples, energy_samples)
    root = jax.random.key(2024)
    self.refs = [np.asarray(dataset.sample(jax.random.fold_in(root, 2 * s), self.big))
                 for s in range(seeds)]
    self._energy = jax.jit(distances.energy_distance)
    self.floor = np.asarray([self(dataset.sample(jax.random.fold_in(root, 2 * s + 1), self.big), s)
                             for s in range(seeds)])

  def __call__(self, x, seed: int) -> tuple[float, float]:
    """(W2, squared energy distance) of x (big points) to seed's reference draw."""
    x = np.asarray(x).reshape(self.big, -1)
    ref = self.refs[seed]
    return (float(distances.wasserstein2(x[:self.num_samples], ref[:self.num_samples])),
            float(self._energy(x[:self.energy_samples], ref[:self.energy_samples])))

  def sample(self, run, params, **options) -> tuple[np.ndarray, list[int], np.ndarray]:
    """Score `big` samples of (run, params) per seed (seed_offset 100 + s; options go to
    experiments.trainer.sample): (scores (seeds, 2), NFE per seed, seed 0's first
    num_samples points)."""
    from experiments import trainer
    scores, nfes, first = [], [], None
    for s in range(self.seeds):
      x, stats = trainer.sample(run, params, self.big, seed_offset=100 + s, **options)
      nfes.append(int(stats["nfe"]))
      scores.append(self(x, s))
      if s == 0:
        first = np.asarray(x)[:self.num_samples]
    return np.asarray(scores), nfes, first


def work_root(out_dir: str, name: str, quick: bool) -> str:
  """The training cache of figure NAME: OUT/_work/NAME (OUT/_work/NAME_quick in quick mode).

  OUT/_work gets a .gitignore of "*" so cached runs never show up as untracked files.
  """
  base = os.path.join(out_dir, WORK)
  os.makedirs(base, exist_ok=True)
  ignore = os.path.join(base, ".gitignore")
  if not os.path.exists(ignore):
    with open(ignore, "w") as f:
      f.write("*\n")
  root = os.path.join(base, f"{name}_quick" if quick else name)
  os.makedirs(root, exist_ok=True)
  return root


def to_jsonable(value):
  """Arrays -> nested lists, numpy scalars -> Python numbers, recursively through dicts/lists."""
  if isinstance(value, dict):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if hasattr(value, "__array__") and not isinstance(value, (str, bytes)):
    array = np.asarray(value)
    return array.item() if array.ndim == 0 else array.tolist()
  if isinstance(value, np.generic):
    return value.item()
  return value


def write_json(path: str, data: dict) -> str:
  """Write `data` (arrays allowed) as indented JSON; returns the path."""
  with open(path, "w") as f:
    json.dump(to_jsonable(data), f, indent=1)
  return path


def _config_dict(config) -> dict:
  return json.loads(config.to_json_best_effort(sort_keys=True))


def finished_summary(config, workdir: str) -> dict | None:
  """The eval.json of a finished run of exactly `config` in `workdir`, else None."""
  eval_path = os.path.join(workdir, "eval.json")
  config_path = os.path.join(workdir, "config.json")
  if not (os.path.exists(eval_path) and os.path.exists(config_path)):
    return None
  with open(config_path) as f:
    if json.load(f) != _config_dict(config):
      return None
  with open(eval_path) as f:
    summary = json.load(f)
  if summary.get("status") != "done" or summary.get("step") != config.train.num_steps:
    return None
  return summary


def train_cached(config, workdir: str) -> dict:
  """Train `config` into `workdir` (or reuse / resume it); returns the eval summary.

  A workdir trained from a different config is deleted first (it is a figure's
  cache, never a user's run: callers pass paths from `work_root`).
  """
  from experiments import trainer
  config.log.progress = False
  summary = finished_summary(config, workdir)
  if summary is not None:
    return {**summary, "reused": True}
  config_path = os.path.join(workdir, "config.json")
  if os.path.exists(config_path):
    with open(config_path) as f:
      if json.load(f) != _config_dict(config):
        shutil.rmtree(workdir)
  summary = trainer.train_and_evaluate(config, workdir)
  if summary.get("status") != "done":
    raise RuntimeError(f"training into {workdir} did not finish: {summary}")
  return {**summary, "reused": False}
