"""Benchmark: n seeds in one vmapped run vs n sequential runs (python -m launch.benchmark --config=configs/bench_seeds.py).

Arguments: seeds (n), steps, hidden (MLP width, two layers), batch, eval_samples, quick
(2 seeds, 30 steps: for tests).
"""

import ml_collections

from configs.common import parse_arg


def get_config(arg=None):
  """The benchmark settings (read by experiments.benchmarks.seeds.run)."""
  a = parse_arg(arg, seeds=8, steps=1000, hidden=64, batch=256, eval_samples=500, quick=False)
  return ml_collections.ConfigDict({
      "benchmark": "seeds",
      "name": "seeds",
      "num_seeds": 2 if a.quick else a.seeds,
      "steps": 30 if a.quick else a.steps,
      "hidden": (a.hidden, a.hidden),
      "batch": a.batch,
      "eval_samples": 128 if a.quick else a.eval_samples,
      "metric": "w2",
  })
