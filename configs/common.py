"""Shared config pieces: the `:key=value,...` argument parser, the base fields, the runlocal
shrink, the toy MLP training settings, sweep axes."""

from __future__ import annotations

import itertools

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


def base_config(family: str = "", dataset: str = "moons", **data) -> ml_collections.ConfigDict:
  """Fields every experiment has; families add their own sections.

  family, dataset: config.family and config.data.name; data: further config.data fields
  (e.g. pixel_range="symmetric"), in this order.
  """
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_seeds = 1  # > 1: that many replicas (seeds seed .. seed + n - 1) in one vmapped step
  c.family = family
  c.data = ml_collections.ConfigDict({"name": dataset, **data})
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


def runlocal(c: ml_collections.ConfigDict, *, num_steps: int, checkpoint_every: int,
             log_every: int, batch_size: int | None = None, warmup_steps: int | None = None,
             num_samples: int | None = None, plot_samples: int | None = None,
             progress: bool | None = None, **sections) -> ml_collections.ConfigDict:
  """Shrink c in place to its `runlocal=true` variant (a few steps of a tiny model, for tests).

  The keywords set config.train (num_steps, batch_size, checkpoint_every, log_every),
  config.optim.warmup_steps, config.eval (num_samples, plot_samples) and config.log.progress;
  None keeps a value. Any other keyword names a section and the fields to set in it, e.g.
  model={"hidden": (32, 32)}.
  """
  fields = {"train": {"num_steps": num_steps, "batch_size": batch_size,
                      "checkpoint_every": checkpoint_every, "log_every": log_every},
            "optim": {"warmup_steps": warmup_steps},
            "eval": {"num_samples": num_samples, "plot_samples": plot_samples},
            "log": {"progress": progress}}
  for section, values in list(fields.items()) + list(sections.items()):
    c[section].update({k: v for k, v in values.items() if v is not None})
  return c


def gan_optimizers(c: ml_collections.ConfigDict, *, lr: float, critic_lr: float, b1: float,
                   b2: float, schedule: str = "constant") -> ml_collections.ConfigDict:
  """config.optim (the generator's) and config.optim_critic: Adam, no warmup, no clipping."""
  for section, section_lr in (("optim", lr), ("optim_critic", critic_lr)):
    c[section] = ml_collections.ConfigDict({
        "name": "adam", "lr": section_lr, "schedule": schedule, "warmup_steps": 0,
        "final_lr_fraction": 0.0, "grad_clip": 0.0, "b1": b1, "b2": b2, "weight_decay": 0.0})
  return c


def toy_schedule(c: ml_collections.ConfigDict, a, *, lr: float) -> ml_collections.ConfigDict:
  """The shared training settings of the toy MLP configs (configs/cfm_toy.py, ddpm_toy.py).

  a: the parsed config argument (steps, batch, runlocal). Checkpoints every 1000 steps,
  warmup (200 steps) + cosine to 5% of lr; runlocal: 20 steps of a (32, 32) MLP.
  """
  c.train.update(num_steps=a.steps, batch_size=a.batch, checkpoint_every=1000, log_every=200)
  c.optim.update(schedule="warmup_cosine", warmup_steps=200, lr=lr, final_lr_fraction=0.05)
  if a.runlocal:
    runlocal(c, num_steps=20, checkpoint_every=10, log_every=5, warmup_steps=2, num_samples=200,
             model={"hidden": (32, 32)})
  return c


def ar_model(a, **fields) -> ml_collections.ConfigDict:
  """config.model of the autoregressive configs (configs/ar_digits.py, ar_text.py) from their
  parsed arguments (dim, layers, heads, kv_heads, positions, dropout), plus `fields`."""
  return ml_collections.ConfigDict({
      "dim": a.dim, "num_layers": a.layers, "num_heads": a.heads, "num_kv_heads": a.kv_heads,
      "mlp_ratio": 4.0, "norm": "rms", "positions": a.positions, "tie_embeddings": False,
      "dropout": a.dropout, **fields})


def ar_schedule(c: ml_collections.ConfigDict, a, *, weight_decay: float):
  """The shared training settings of the autoregressive configs: a.steps of batch a.batch,
  AdamW (b2 0.99) with 200 warmup steps then cosine to 5% of a.lr, EMA 0.999, 1000
  evaluation samples; runlocal: 20 steps of a 1-layer width-32 model."""
  c.train.update(num_steps=a.steps, batch_size=a.batch, checkpoint_every=1000, log_every=250)
  c.optim.update(lr=a.lr, schedule="warmup_cosine", warmup_steps=200, final_lr_fraction=0.05,
                 name="adamw", weight_decay=weight_decay, b2=0.99)
  c.ema_decay = 0.999
  c.eval.num_samples = 1000
  if a.runlocal:
    runlocal(c, num_steps=20, checkpoint_every=10, log_every=5, warmup_steps=2, num_samples=64,
             model={"dim": 32, "num_layers": 1, "num_heads": 2})
  return c


# ---------------------------------------------------------------------------------------------
# Sweeps: get_sweep(arg) -> list of override dicts {"dotted.key": value}, built from axes.
# An axis is ("dotted.key", [values]), a dict {"key": [values], ...} (one axis per item), or a
# list of override dicts (e.g. the result of another product / zip_).


def _axes(axes, caller: str) -> list[list[dict]]:
  """Every axis as a list of override dicts."""
  out = []
  for axis in axes:
    if isinstance(axis, dict):
      out.extend(_axes(list(axis.items()), caller))
    elif isinstance(axis, tuple) and len(axis) == 2 and isinstance(axis[0], str):
      key, values = axis
      if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{caller}: axis {key!r} needs a list of values, got {values!r}")
      values = list(values)
      if not values:
        raise ValueError(f"{caller}: axis {key!r} has no values")
      out.append([{key: v} for v in values])
    elif isinstance(axis, list) and axis and all(isinstance(p, dict) for p in axis):
      out.append([dict(p) for p in axis])
    else:
      raise ValueError(f"{caller}: an axis must be (key, values), a dict {{key: values}} or a "
                       f"non-empty list of override dicts, got {axis!r}")
  return out


def _merge(points: tuple[dict, ...], caller: str) -> dict:
  merged = {}
  for point in points:
    for key, value in point.items():
      if key in merged:
        raise ValueError(f"{caller}: key {key!r} appears in more than one axis")
      merged[key] = value
  return merged


def product(*axes) -> list[dict]:
  """All combinations of the axes (the last axis varies fastest, as itertools.product).

  product(("optim.lr", [1e-3, 3e-3]), ("seed", [0, 1])) ->
  [{"optim.lr": 1e-3, "seed": 0}, {"optim.lr": 1e-3, "seed": 1}, {"optim.lr": 3e-3, ...}, ...]
  """
  return [_merge(combo, "product") for combo in itertools.product(*_axes(axes, "product"))]


def zip_(*axes) -> list[dict]:
  """The axes walked together (all must have the same length).

  zip_(("gan.loss", ["non_saturating", "wgan_gp"]), ("gan.n_critic", [1, 5])) ->
  [{"gan.loss": "non_saturating", "gan.n_critic": 1}, {"gan.loss": "wgan_gp", "gan.n_critic": 5}]
  """
  lists = _axes(axes, "zip_")
  lengths = [len(a) for a in lists]
  if len(set(lengths)) > 1:
    raise ValueError(f"zip_: axes must have equal lengths, got {lengths}")
  return [_merge(points, "zip_") for points in zip(*lists)]


def sweep_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parse the config argument inside get_sweep: parse_arg's syntax and typing, other keys ignored.

  get_config and get_sweep receive the same "k1=v1,k2=v2" string; get_config checks every
  key, get_sweep reads the few it cares about (e.g. runlocal) and skips the rest.
  """
  items = filter(None, (arg or "").split(","))
  mine = ",".join(item for item in items if item.partition("=")[0] in defaults or "=" not in item)
  return parse_arg(mine, **defaults)
