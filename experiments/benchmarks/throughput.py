"""Train-step throughput of the trainer (CFM on toy data) vs a plain PyTorch CFM loop.

Both sides do the same work per step: draw a batch of `moons`, I-CFM loss on an
MLP with a 32-d sinusoidal time embedding and SiLU layers, backward, global-norm
clipping, Adam, EMA update. Ours is the trainer's jitted, donated step
(experiments.trainer.make_train_step); the peer runs when torch is installed.
"""

from __future__ import annotations

import math
import os
import time

import jax

from configs import cfm_toy
from experiments import trainer


def _ours(batch: int, hidden, steps: int, warmup: int) -> dict:
  config = cfm_toy.get_config(f"batch={batch}")
  config.model.hidden = tuple(hidden)
  config.train.num_steps = steps + warmup
  config.optim.warmup_steps = 0
  run = trainer.build(config)
  state = trainer.init_state(run)
  t0 = time.perf_counter()
  step_fn = trainer.make_train_step(run).lower(state, run.keys["train"]).compile()
  compile_s = time.perf_counter() - t0
  for _ in range(warmup):
    state, _ = step_fn(state, run.keys["train"])
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = step_fn(state, run.keys["train"])
  jax.block_until_ready((state, metrics))
  return {"steps_per_sec": steps / (time.perf_counter() - t0), "compile_s": compile_s}


def _torch(batch: int, hidden, steps: int, warmup: int) -> dict | None:
  try:
    import torch
  except ImportError:
    return None
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count() or 1)
  time_dim = 32
  widths = [2 + time_dim, *hidden]
  layers = []
  for a, b in zip(widths[:-1], widths[1:]):
    layers += [torch.nn.Linear(a, b), torch.nn.SiLU()]
  net = torch.nn.Sequential(*layers, torch.nn.Linear(widths[-1], 2))
  ema = [p.detach().clone() for p in net.parameters()]
  opt = torch.optim.Adam(net.parameters(), lr=2e-3)
  half = time_dim // 2
  freqs = torch.exp(-math.log(10_000.0) * torch.arange(half) / half)

  def moons(n):  # the same two interleaved half circles as research.data.toy
    u = torch.rand(n) * math.pi
    upper = torch.rand(n) < 0.5
    x = torch.where(upper, torch.cos(u), 1 - torch.cos(u))
    y = torch.where(upper, torch.sin(u), 0.5 - torch.sin(u))
    pts = torch.stack([x, y], -1) + 0.1 * torch.randn(n, 2)
    return 2.0 * (pts - torch.tensor([0.5, 0.25]))

  def step():
    x1 = moons(batch)
    x0 = torch.randn_like(x1)
    t = torch.rand(batch, 1)
    xt = t * x1 + (1 - t) * x0
    args = 1000.0 * t * freqs
    v = net(torch.cat([xt, torch.cos(args), torch.sin(args)], -1))
    loss = ((v - (x1 - x0)) ** 2).sum(-1).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()
    with torch.no_grad():
      torch._foreach_mul_(ema, 0.999)
      torch._foreach_add_(ema, list(net.parameters()), alpha=0.001)
    return loss

  for _ in range(warmup):
    step()
  t0 = time.perf_counter()
  for _ in range(steps):
    loss = step()
  loss.item()
  return {"steps_per_sec": steps / (time.perf_counter() - t0), "version": torch.__version__}


def run(config) -> dict:
  rows = []
  for batch in config.batch_sizes:
    ours = _ours(batch, config.hidden, config.steps, config.warmup)
    peer = _torch(batch, config.hidden, config.steps, config.warmup) if config.with_torch else None
    rows.append({
        "batch": batch,
        "jax steps/s": ours["steps_per_sec"],
        "jax compile s": ours["compile_s"],
        "torch steps/s": peer["steps_per_sec"] if peer else None,
        "jax / torch": ours["steps_per_sec"] / peer["steps_per_sec"] if peer else None,
    })
  notes = [] if any(r["torch steps/s"] for r in rows) else ["(torch not installed: peer skipped)"]
  return {"title": f"CFM train step throughput, MLP {tuple(config.hidden)}, {jax.device_count()} device(s)",
          "columns": ["batch", "jax steps/s", "jax compile s", "torch steps/s", "jax / torch"],
          "rows": rows, "notes": notes}
