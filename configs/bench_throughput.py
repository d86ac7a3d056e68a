"""Benchmark: trainer step throughput vs plain PyTorch (python -m launch.benchmark --config=configs/bench_throughput.py)."""

import ml_collections

from configs.common import parse_arg


def get_config(arg=None):
  a = parse_arg(arg, steps=300, warmup=30, quick=False)
  return ml_collections.ConfigDict({
      "benchmark": "throughput",
      "name": "throughput",
      "batch_sizes": (64, 256, 1024) if not a.quick else (64,),
      "hidden": (256, 256, 256),
      "steps": a.steps if not a.quick else 20,
      "warmup": a.warmup if not a.quick else 3,
      "with_torch": True,
  })
