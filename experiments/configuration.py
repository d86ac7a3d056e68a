"""Config checks run before anything compiles, and config round-trips through WORKDIR/config.json."""

from __future__ import annotations

import json
import os

import jax
import ml_collections

from experiments import data as data_lib
from experiments import families, optim, sharding


def _require(config, dotted: str):
  node = config
  for part in dotted.split("."):
    if part not in node:
      raise ValueError(f"config.{dotted} is missing")
    node = node[part]
  return node


def _positive_int(config, dotted: str, *, allow_zero: bool = False) -> int:
  value = _require(config, dotted)
  ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if allow_zero else value >= 1)
  if not ok:
    bound = ">= 0" if allow_zero else ">= 1"
    raise ValueError(f"config.{dotted} must be an integer {bound}, got {value!r}")
  return value


def validate(config: ml_collections.ConfigDict) -> None:
  """Raise ValueError naming the first bad field; cheap, nothing is compiled."""
  _require(config, "seed")
  if not isinstance(config.seed, int):
    raise ValueError(f"config.seed must be an integer, got {config.seed!r}")
  family_cls = families.get(_require(config, "family"))
  data_lib.make_dataset(_require(config, "data"))
  for field in ("train.num_steps", "train.batch_size", "train.checkpoint_every",
                "train.log_every"):
    _positive_int(config, field)
  if "num_seeds" in config:
    _positive_int(config, "num_seeds")
  for field in ("train.plot_every", "train.keep_every"):
    if field.split(".")[1] in config.train:
      _positive_int(config, field, allow_zero=True)
  if config.train.get("keep", 3) < 1:
    raise ValueError(f"config.train.keep must be >= 1, got {config.train.keep}")
  rule = config.train.get("param_sharding", "replicated")
  if rule not in sharding.PARAM_RULES:
    raise ValueError(f"config.train.param_sharding must be one of {sharding.PARAM_RULES}, got {rule!r}")
  num_devices = config.train.get("num_devices", 0) or jax.device_count()
  if config.train.batch_size % num_devices:
    raise ValueError(f"config.train.batch_size={config.train.batch_size} must be divisible by "
                     f"the number of devices ({num_devices})")
  _require(config, "optim")
  for section in sorted(k for k in config.keys() if k == "optim" or k.startswith("optim_")):
    _check_optim(config, section)
  decay = _require(config, "ema_decay")
  if not 0.0 <= decay < 1.0:
    raise ValueError(f"config.ema_decay must be in [0, 1), got {decay}")
  family_cls.check_config(config)


def _check_optim(config, section: str) -> None:
  """An optimizer section (config.optim, or config.optim_<phase> for multi-phase families)."""
  o = config[section]
  if o.get("name") not in optim.OPTIMIZERS:
    raise ValueError(f"config.{section}.name must be one of {optim.OPTIMIZERS}, got {o.get('name')!r}")
  if o.get("schedule", "constant") not in optim.SCHEDULES:
    raise ValueError(f"config.{section}.schedule must be one of {optim.SCHEDULES}, got {o.schedule!r}")
  lr = o.get("lr")
  if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr <= 0:
    raise ValueError(f"config.{section}.lr must be a positive number, got {lr!r}")
  warmup = o.get("warmup_steps", 0)
  if not 0 <= warmup < config.train.num_steps:
    raise ValueError(f"config.{section}.warmup_steps must be in [0, config.train.num_steps="
                     f"{config.train.num_steps}), got {warmup}")
  if o.get("grad_clip", 0.0) < 0:
    raise ValueError(f"config.{section}.grad_clip must be >= 0, got {o.grad_clip}")


def save_json(config, workdir: str) -> str:
  path = os.path.join(workdir, "config.json")
  if jax.process_index() == 0:
    with open(path, "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  return path


def load_json(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was launched with (tuples come back as lists)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no config.json in workdir {workdir!r}: was it trained there?")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))
