"""Config checks run before anything compiles, and config round-trips through WORKDIR/config.json."""

from __future__ import annotations

import json
import os

import jax
import ml_collections
from absl import logging

from experiments import data as data_lib
from experiments import families, optim, sharding
from experiments import validation as check
from experiments import workdir as workdir_lib


def validate(config: ml_collections.ConfigDict) -> None:
  """Raise ValueError naming the first bad field; cheap, nothing is compiled or loaded.

  A warmup longer than the run is not an error: the schedule clips it to the run
  (optim.effective_warmup) and a warning is logged.
  """
  check.integer(check.require(config, "seed"), "config.seed")
  family_cls = families.get(check.require(config, "family"))
  data_lib.dataset_info(check.require(config, "data"))
  for field in ("train.num_steps", "train.batch_size", "train.checkpoint_every",
                "train.log_every", "eval.num_samples"):
    check.positive_int(check.require(config, field), f"config.{field}")
  if "num_seeds" in config:
    check.positive_int(config.num_seeds, "config.num_seeds")
  for field in ("plot_every", "keep_every", "num_devices"):
    if field in config.train:
      check.non_negative_int(config.train[field], f"config.train.{field}")
  check.positive_int(config.train.get("keep", 3), "config.train.keep")
  check.choice(config.train.get("param_sharding", "replicated"), sharding.PARAM_RULES,
               "config.train.param_sharding")
  num_devices = config.train.get("num_devices", 0) or jax.device_count()
  if config.train.batch_size % num_devices:
    raise ValueError(f"config.train.batch_size={config.train.batch_size} must be divisible by "
                     f"the number of devices ({num_devices})")
  if "plot_samples" in config.eval:
    check.positive_int(config.eval.plot_samples, "config.eval.plot_samples")
  check.require(config, "optim")
  for section in sorted(k for k in config.keys() if k == "optim" or k.startswith("optim_")):
    _check_optim(config, section)
  check.number_in(check.require(config, "ema_decay"), "config.ema_decay", 0.0, 1.0)
  _check_dequantize(config, family_cls)
  family_cls.check_config(config)


def _supports_dequantize(name: str) -> bool:
  try:
    return bool(getattr(families.get(name), "supports_dequantize", False))
  except (ImportError, AttributeError):   # a family registered but not importable here
    return False


def _check_dequantize(config, family_cls) -> None:
  """config.data.dequantize: 0 (off) or L >= 2, in-memory digits, a family that supports it
  (`supports_dequantize = True`: it trains on the dequantized draws of dataset.sample).
  Whether the pixels lie on the grid of L levels is checked when the data is built."""
  levels = check.non_negative_int(config.data.get("dequantize", 0), "config.data.dequantize")
  if not levels:
    return
  if levels == 1:
    raise ValueError("config.data.dequantize must be 0 (off) or a number of levels >= 2, got 1")
  if not getattr(family_cls, "supports_dequantize", False):
    supported = [n for n in families.names() if _supports_dequantize(n)]
    raise ValueError(f"config.data.dequantize={levels}: the {config.family} family does not "
                     f"train on dequantized data (families that do: {supported})")
  if config.data.name not in data_lib.DIGITS_NAMES:
    raise ValueError(f"config.data.dequantize={levels} needs an in-memory digits set "
                     f"{data_lib.DIGITS_NAMES}, got config.data.name={config.data.name!r}")


def _check_optim(config, section: str) -> None:
  """An optimizer section (config.optim, or config.optim_<phase> for multi-phase families)."""
  o, name = config[section], f"config.{section}"
  check.choice(o.get("name"), optim.OPTIMIZERS, f"{name}.name")
  check.choice(o.get("schedule", "constant"), optim.SCHEDULES, f"{name}.schedule")
  check.positive_number(o.get("lr"), f"{name}.lr")
  warmup = check.non_negative_int(o.get("warmup_steps", 0), f"{name}.warmup_steps")
  num_steps = config.train.num_steps
  if warmup >= num_steps:
    logging.warning("%s.warmup_steps=%d is not shorter than config.train.num_steps=%d: "
                    "clipped to %d", name, warmup, num_steps, optim.effective_warmup(o, num_steps))
  check.non_negative_number(o.get("grad_clip", 0.0), f"{name}.grad_clip")


def as_dict(config) -> dict:
  """The config as config.json stores it (plain JSON types: tuples become lists)."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def save_json(config, workdir: str) -> str:
  """Write WORKDIR/config.json atomically (process 0); returns its path."""
  path = os.path.join(workdir, "config.json")
  if jax.process_index() == 0:
    workdir_lib.atomic_write_text(path, config.to_json_best_effort(indent=2, sort_keys=True))
  return path


def load_json(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was launched with (tuples come back as lists)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no config.json in workdir {workdir!r}: was it trained there?")
  try:
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  except ValueError as e:
    raise ValueError(f"{path} is not valid JSON ({e})") from None
