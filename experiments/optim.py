"""Optax optimizer from `config.optim`: adam/adamw, an lr schedule, gradient clipping."""

from __future__ import annotations

import optax

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "linear")


def effective_warmup(optim, num_steps: int) -> int:
  """optim.warmup_steps clipped to the run: at most num_steps - 1 (so a short run still works)."""
  return max(0, min(optim.get("warmup_steps", 0), num_steps - 1))


def learning_rate(optim, num_steps: int) -> optax.Schedule:
  """The lr schedule named by optim.schedule (warmup in optim.warmup_steps, clipped to the run)."""
  lr, warmup = optim.lr, effective_warmup(optim, num_steps)
  name = optim.get("schedule", "constant")
  if name == "constant":
    return optax.warmup_constant_schedule(0.0, lr, warmup) if warmup else optax.constant_schedule(lr)
  if name == "cosine":
    return optax.cosine_decay_schedule(lr, num_steps, alpha=optim.get("final_lr_fraction", 0.0))
  if name == "warmup_cosine":
    # One warmup step at least (lr 0 at step 0), unless the run is a single step.
    warmup = max(warmup, min(1, num_steps - 1))
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, num_steps,
                                              end_value=lr * optim.get("final_lr_fraction", 0.0))
  if name == "linear":
    return optax.linear_schedule(lr, lr * optim.get("final_lr_fraction", 0.0), num_steps)
  raise ValueError(f"config.optim.schedule must be one of {SCHEDULES}, got {name!r}")


def make_optimizer(optim, num_steps: int) -> optax.GradientTransformation:
  """Clip by global norm (optim.grad_clip > 0), then adam / adamw / sgd on the schedule."""
  schedule = learning_rate(optim, num_steps)
  name = optim.name
  if name == "adam":
    opt = optax.adam(schedule, b1=optim.get("b1", 0.9), b2=optim.get("b2", 0.999),
                     eps=optim.get("eps", 1e-8))
  elif name == "adamw":
    opt = optax.adamw(schedule, b1=optim.get("b1", 0.9), b2=optim.get("b2", 0.999),
                      eps=optim.get("eps", 1e-8), weight_decay=optim.get("weight_decay", 1e-4))
  elif name == "sgd":
    opt = optax.sgd(schedule, momentum=optim.get("momentum", 0.0) or None)
  else:
    raise ValueError(f"config.optim.name must be one of {OPTIMIZERS}, got {name!r}")
  clip = optim.get("grad_clip", 0.0)
  return optax.chain(optax.clip_by_global_norm(clip), opt) if clip and clip > 0 else opt
