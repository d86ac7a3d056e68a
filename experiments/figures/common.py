"""What every figure module shares: output paths, JSON of the plotted data, cached training.

A figure NAME writes OUT/NAME.png and OUT/NAME.json (the arrays it plots, as
lists). Figures that need trained models train them with
experiments.trainer.train_and_evaluate into OUT/_work/NAME[_quick]/RUN: the
workdir is the only state, so a finished run (eval.json with status "done" at
the configured number of steps, trained from the same config) is reused, an
interrupted one resumes, and one trained from another config is deleted and
retrained (the cache is the figure's own).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from experiments import plotting  # noqa: F401  (selects matplotlib's Agg backend)

WORK = "_work"


def paths(out_dir: str, name: str) -> tuple[str, str]:
  """(OUT/NAME.png, OUT/NAME.json), creating OUT."""
  os.makedirs(out_dir, exist_ok=True)
  stem = os.path.join(out_dir, name)
  return stem + ".png", stem + ".json"


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
