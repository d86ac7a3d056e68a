"""Benchmark: steps/s of one training job as 1 process x 8 devices, 2 processes x 4 devices
(jax.distributed on this machine, gloo between the processes) and 1 process x 1 device.

Usage: python -m launch.benchmark --config=configs/bench_multiprocess.py[:steps=600,...]
Arguments: config (the training config, default the README's default job), steps (train
steps per topology), log_every (the steps/s window; the first window, with compilation
behind it, is left out), topologies ('-'-separated PROCESSESxDEVICES, e.g. 1x8-2x4-1x1),
batch (global batch size; default the config's), quick (a tiny setting for tests).
"""

import ml_collections

from configs.common import parse_arg


def get_config(arg=None):
  a = parse_arg(arg, config="configs/default.py", steps=600, log_every=100,
                topologies="1x8-2x4-1x1", batch=0, quick=False)
  c = ml_collections.ConfigDict({
      "benchmark": "multiprocess",
      "name": "multiprocess",
      "train_config": a.config,
      "num_steps": a.steps,
      "log_every": a.log_every,
      "topologies": tuple(tuple(int(v) for v in t.split("x")) for t in a.topologies.split("-")),
      "batch_size": a.batch,
      "timeout_s": 1800,
  })
  if a.quick:
    c.update(name="multiprocess_quick", num_steps=20, log_every=10,
             topologies=((1, 2), (2, 1)), timeout_s=600)
  return c
