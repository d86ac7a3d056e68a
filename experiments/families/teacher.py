"""A trained diffusion run as the teacher of a distillation family (consistency "cd", "lcm").

    teacher = load_diffusion_teacher(workdir, field="config.lcm.teacher_workdir")
    teacher.family.model_fn(teacher.params, y)(x, t)     # the teacher's prediction
    teacher.family.schedule, teacher.family.prediction, teacher.config

The workdir is restored through experiments.run.load (its config.json and latest
checkpoint; the EMA parameters become the teacher). Every refusal is a ValueError
naming `field`: no config.json, no checkpoint, a run whose family is not a diffusion
model (no model_fn / schedule / prediction).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

_DIFFUSION_ATTRS = ("model_fn", "schedule", "prediction")


@dataclasses.dataclass(frozen=True)
class Teacher:
  family: Any       # the teacher run's family (a Diffusion)
  params: Any       # its EMA parameters
  config: Any       # its config (a ConfigDict)


def teacher_config(workdir: str, field: str):
  """The teacher's config.json as a ConfigDict; ValueError naming `field` if it has none."""
  from experiments import configuration
  if not workdir:
    raise ValueError(f"{field} must name a trained diffusion workdir, got {workdir!r}")
  if not os.path.exists(os.path.join(workdir, "config.json")):
    raise ValueError(f"{field}={workdir!r} holds no config.json: train the teacher there first")
  return configuration.load_json(workdir)


def load_diffusion_teacher(workdir: str, field: str) -> Teacher:
  """The diffusion model trained in `workdir` (its EMA params), via experiments.run.load."""
  from experiments import run as run_lib  # run builds families: import at use
  teacher_config(workdir, field)
  try:
    run, state = run_lib.load(workdir)
  except FileNotFoundError as e:
    raise ValueError(f"{field}={workdir!r}: {e}") from None
  family = run.family
  for attr in _DIFFUSION_ATTRS:
    if not hasattr(family, attr):
      raise ValueError(f"{field}={workdir!r} holds a {run.config.family!r} run whose family "
                       f"has no {attr!r}: the teacher must be a diffusion model")
  return Teacher(family, state["ema_params"], run.config)
