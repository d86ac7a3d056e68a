"""Seeds in one program: one run with config.num_seeds = n vs n sequential single-seed runs.

Both sides train conditional flow matching (configs/cfm_toy.py, I-CFM on moons) with a
small MLP for the same number of steps and evaluate every seed (W2 to fresh data, the
trainer's evaluation). Replica i of the vmapped run is the run with seed i, so the two
sides' metrics agree up to float rounding; the time is the wall time of
trainer.train_and_evaluate (config check, compile, train, checkpoint, evaluate). The
sequential runs share this process, so they pay no interpreter / JAX start-up (about
2-5 s per run for separate processes): the ratio is a lower bound for a real sweep.
"""

from __future__ import annotations

import os
import tempfile
import time

import jax
import numpy as np

from configs import cfm_toy
from experiments import logs, trainer


def train_config(config, seed: int, num_seeds: int):
  """The CFM run of the benchmark with the given seed(s)."""
  c = cfm_toy.get_config(f"steps={config.steps},batch={config.batch}")
  c.model.hidden = tuple(config.hidden)
  c.seed = seed
  c.num_seeds = num_seeds
  c.optim.warmup_steps = min(200, config.steps // 10)
  c.train.num_devices = 1
  c.train.checkpoint_every = config.steps
  c.train.log_every = max(1, min(200, config.steps))
  c.train.async_checkpoint = False
  c.log.progress = False
  c.eval.num_samples = config.eval_samples
  c.eval.plot_samples = config.eval_samples
  return c


def _timed(train_cfg, workdir: str) -> tuple[float, dict]:
  """(wall seconds, eval summary + "train_s": seconds of the training loop after compile)."""
  t0 = time.perf_counter()
  summary = trainer.train_and_evaluate(train_cfg, workdir)
  seconds = time.perf_counter() - t0
  windows = [(r["step"], r["steps_per_sec"]) for r in logs.read_metrics(workdir)
             if "steps_per_sec" in r]
  train_s, last = 0.0, 0
  for step, rate in windows:
    train_s, last = train_s + (step - last) / rate, step
  return seconds, {**summary, "train_s": train_s}


def run(config) -> dict:
  """Time one num_seeds = n run and n single-seed runs; dict(title, columns, rows, notes, ...)."""
  n, metric = config.num_seeds, config.metric
  if not (isinstance(n, int) and n >= 2):
    raise ValueError(f"config.num_seeds must be an integer >= 2, got {n!r}")
  if not (isinstance(config.steps, int) and config.steps >= 2):
    raise ValueError(f"config.steps must be an integer >= 2, got {config.steps!r}")
  with tempfile.TemporaryDirectory() as tmp:
    vmapped_s, vmapped = _timed(train_config(config, 0, n), os.path.join(tmp, "vmapped"))
    runs = [_timed(train_config(config, i, 1), os.path.join(tmp, f"seed{i}")) for i in range(n)]
  vm_values = np.asarray(vmapped["per_seed"][metric])
  seq_values = np.asarray([s[metric] for _, s in runs])
  sequential_s = sum(t for t, _ in runs)
  ratio = sequential_s / vmapped_s
  rows = [
      {"mode": f"vmapped: 1 run, num_seeds={n}", "wall s": vmapped_s,
       "compile s": vmapped["train_compile_s"], "train s": vmapped["train_s"],
       "eval + other s": vmapped_s - vmapped["train_compile_s"] - vmapped["train_s"],
       f"{metric} mean": float(vm_values.mean()),
       f"{metric} std": float(vm_values.std())},
      {"mode": f"sequential: {n} runs, num_seeds=1", "wall s": sequential_s,
       "compile s": float(sum(s["train_compile_s"] for _, s in runs)),
       "train s": float(sum(s["train_s"] for _, s in runs)),
       "eval + other s": float(sum(t - s["train_compile_s"] - s["train_s"] for t, s in runs)),
       f"{metric} mean": float(seq_values.mean()), f"{metric} std": float(seq_values.std())},
  ]
  gap = float(np.max(np.abs(vm_values - seq_values)))
  notes = [
      f"sequential / vmapped wall time: {ratio:.2f}x ({sequential_s:.1f} s vs {vmapped_s:.1f} s)",
      f"compile: {rows[1]['compile s'] / rows[0]['compile s']:.2f}x, training loop: "
      f"{rows[1]['train s'] / rows[0]['train s']:.2f}x, evaluation + other: "
      f"{rows[1]['eval + other s'] / rows[0]['eval + other s']:.2f}x",
      f"{metric} per seed, vmapped:   {np.round(vm_values, 4).tolist()}",
      f"{metric} per seed, sequential: {np.round(seq_values, 4).tolist()}",
      f"max |replica i - run with seed i| of {metric}: {gap:.2g} (same seeds: equal up to rounding)",
      "wall = config check + compile + train + checkpoint + evaluation of every seed; train = "
      "the training loop after compile; other = config check, init, checkpoints.",
      f"std = population std over the {n} seeds; sequential runs share one process (no "
      "start-up cost counted).",
  ]
  return {"title": f"{n} seeds of CFM (MLP {tuple(config.hidden)}, {config.steps} steps, batch "
                   f"{config.batch}): one vmapped run vs {n} runs, {jax.devices()[0].platform}",
          "columns": ["mode", "wall s", "compile s", "train s", "eval + other s",
                      f"{metric} mean", f"{metric} std"],
          "rows": rows, "notes": notes, "ratio": ratio,
          "per_seed": {"vmapped": vm_values.tolist(), "sequential": seq_values.tolist()}}
