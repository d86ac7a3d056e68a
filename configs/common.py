"""Shared config pieces: the `:key=value,...` argument parser and the base fields."""

from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parse a config argument "k1=v1,k2=v2" over typed defaults (big_vision style).

  Values take the type of their default (int, float, bool, str); unknown keys raise.
  """
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"config argument items must look like key=value, got {item!r}")
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; valid: {sorted(defaults)}")
    kind = type(defaults[key])
    if kind is bool:
      if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"config argument {key} must be true/false, got {value!r}")
      out[key] = value.lower() in ("true", "1")
    else:
      out[key] = kind(value)
  return out


def base_config() -> ml_collections.ConfigDict:
  """Fields every experiment has; families add their own sections."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_seeds = 1  # > 1: that many replicas (seeds seed .. seed + n - 1) in one vmapped step
  c.family = ""
  c.data = ml_collections.ConfigDict({"name": "moons"})
  c.train = ml_collections.ConfigDict({
      "num_steps": 1000,
      "batch_size": 256,        # global batch, split over all devices
      "checkpoint_every": 500,
      "log_every": 100,
      "plot_every": 0,          # 0: plot only at the end
      "keep": 3,                # latest checkpoints kept ...
      "keep_every": 0,          # ... plus every multiple of this step (0: none)
      "num_devices": 0,         # 0: all devices
      "param_sharding": "replicated",  # or "fsdp"
      "async_checkpoint": True,
  })
  c.optim = ml_collections.ConfigDict({
      "name": "adam", "lr": 1e-3, "schedule": "constant", "warmup_steps": 0,
      "final_lr_fraction": 0.0, "grad_clip": 1.0, "b1": 0.9, "b2": 0.999, "weight_decay": 0.0,
  })
  c.ema_decay = 0.999
  c.eval = ml_collections.ConfigDict({"num_samples": 1000, "plot_samples": 2000})
  c.log = ml_collections.ConfigDict({"tensorboard": False, "progress": True})
  return c
