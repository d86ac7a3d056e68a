"""Steps/s of one training job on several topologies: P processes x D devices on this machine.

Each topology trains the same config from scratch in a fresh workdir through the real
launcher (`python -m launch.train`); P > 1 runs as a local jax.distributed job
(experiments/local_cluster.py: 127.0.0.1, gloo between processes). Throughput is the
mean of the steps_per_sec rows of metrics.jsonl after the first window (which has the
compilation behind it). The global batch is the same everywhere, so every topology
computes the same losses (the benchmark reports the largest difference to the first
topology's), and the ratio to the first topology is the cost or gain of the layout.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from experiments import local_cluster

COLUMNS = ["topology", "processes", "devices", "steps/s", "ratio to first", "compile s",
           "wall s", "max |loss diff|"]


def _rows(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def train_once(config, processes: int, devices: int, root: str) -> dict:
  """Train config.train_config on `processes` x `devices`; the metrics of the run."""
  name = f"{processes}x{devices}"
  workdir = os.path.join(root, name)
  flags = ["-m", "launch.train", f"--config={config.train_config}", f"--workdir={workdir}",
           f"--config.train.num_steps={config.num_steps}",
           f"--config.train.log_every={config.log_every}",
           f"--config.train.checkpoint_every={config.num_steps}",
           "--config.log.progress=false", "--config.eval.num_samples=128",
           "--config.eval.plot_samples=128"]
  if config.batch_size:
    flags.append(f"--config.train.batch_size={config.batch_size}")
  t0 = time.perf_counter()
  job = local_cluster.start(flags, num_processes=processes, devices_per_process=devices,
                            log_dir=os.path.join(root, f"logs_{name}"))
  codes = job.wait(timeout=config.timeout_s)
  wall = time.perf_counter() - t0
  if any(codes):
    raise RuntimeError(f"topology {name} failed with exit codes {codes}:\n{job.log(0)[-3000:]}")
  rows = _rows(workdir)
  speed = [r["steps_per_sec"] for r in rows if "steps_per_sec" in r][1:]
  start = next(r for r in rows if r.get("event") == "start")
  return {"topology": name, "processes": processes, "devices": start["num_devices"],
          "steps/s": sum(speed) / len(speed) if speed else None,
          "compile s": start["compile_s"], "wall s": wall,
          "losses": {r["step"]: r["loss"] for r in rows if "loss" in r and "event" not in r}}


def run(config) -> dict:
  rows = []
  with tempfile.TemporaryDirectory(prefix="bench_multiprocess_") as root:
    for processes, devices in config.topologies:
      rows.append(train_once(config, processes, devices, root))
  reference = rows[0]["losses"]
  for row in rows:
    losses = row.pop("losses")
    row["max |loss diff|"] = max(abs(losses[s] - reference[s]) for s in reference)
    row["ratio to first"] = (row["steps/s"] / rows[0]["steps/s"]
                             if row["steps/s"] and rows[0]["steps/s"] else None)
  return {"title": f"Training steps/s by topology ({config.train_config}, {config.num_steps} "
                   f"steps, global batch {'config' if not config.batch_size else config.batch_size})",
          "columns": COLUMNS, "rows": rows,
          "notes": ["P x D: P processes (jax.distributed on 127.0.0.1, gloo between them) with D "
                    "CPU devices each; every topology trains the same global batch.",
                    "CPU runs on several devices wait for each step before dispatching the next "
                    "(experiments/distributed.sync_each_step)."]}
