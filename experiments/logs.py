"""Run logging: WORKDIR/metrics.jsonl (process 0), optional TensorBoard, a progress bar."""

from __future__ import annotations

import json
import math
import os
import sys
import time

import jax
import numpy as np
from absl import logging

from experiments import workdir as workdir_lib


def _plain(value):
  value = np.asarray(value)
  return value.item() if value.ndim == 0 else value.tolist()


class MetricWriter:
  """Appends one JSON object per call to metrics.jsonl; mirrors scalars to TensorBoard."""

  def __init__(self, workdir: str, *, tensorboard: bool = False):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if self.enabled and tensorboard:
      from tensorboardX import SummaryWriter  # optional dependency, imported on demand
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: dict, **extra) -> dict:
    record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}, **extra}
    if self.enabled:
      with open(self.path, "a") as f:
        f.write(json.dumps(record) + "\n")
      if self._tb is not None:
        for k, v in record.items():
          if isinstance(v, (int, float)) and k != "step":
            self._tb.add_scalar(k, v, step)
    return record

  def resume(self, step: int) -> int:
    """Make metrics.jsonl hold exactly the rows of steps <= `step` (the restored checkpoint).

    Rows logged after the last checkpoint by a run that died are dropped (the resumed
    run logs them again, so every step appears once), and a torn last line (a crash
    mid-write) is dropped with a warning. The file is rewritten atomically. Returns
    the number of rows dropped.
    """
    if not self.enabled or not os.path.exists(self.path):
      return 0
    rows, torn = _parse(self.path)
    kept = [r for r in rows if int(r.get("step", 0)) <= step]
    dropped = len(rows) - len(kept) + torn
    if dropped:
      workdir_lib.atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
    return dropped

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def _parse(path: str) -> tuple[list[dict], int]:
  """(rows, number of unreadable lines) of a metrics.jsonl; a torn line is warned about."""
  rows, bad = [], 0
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        rows.append(json.loads(line))
      except ValueError:
        bad += 1
        logging.warning("%s: line %d is torn or not JSON (a crash during a write?); dropped",
                        path, number)
  return rows, bad


def read_metrics(workdir: str) -> list[dict]:
  """The rows of WORKDIR/metrics.jsonl ([] if absent); unreadable lines are skipped."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  return _parse(path)[0]


class Progress:
  """A one-line progress bar with steps/s and ETA on stderr (process 0 only)."""

  def __init__(self, start: int, total: int, *, enabled: bool = True):
    self.start, self.total = start, total
    self.enabled = enabled and jax.process_index() == 0
    self.t0 = time.perf_counter()
    self._last = 0.0
    self._tty = sys.stderr.isatty()  # redirected output gets one line per log step

  def update(self, step: int, loss: float | None = None, force: bool = False) -> None:
    now = time.perf_counter()
    if not self.enabled or (not force and (now - self._last < 0.5 or not self._tty)):
      return
    self._last = now
    done = step - self.start
    rate = done / max(now - self.t0, 1e-9)
    eta = (self.total - step) / rate if rate > 0 else math.inf
    width = 30
    filled = int(width * step / max(self.total, 1))
    bar = "#" * filled + "-" * (width - filled)
    loss_text = f" loss {loss:.4f}" if loss is not None else ""
    eta_text = f"{eta:5.0f}s" if math.isfinite(eta) else "    ?"
    line = f"[{bar}] {step}/{self.total} {rate:6.1f} it/s ETA {eta_text}{loss_text}"
    sys.stderr.write(f"\r{line}" if self._tty else f"{line}\n")
    sys.stderr.flush()

  def close(self) -> None:
    if self.enabled and self._tty:
      sys.stderr.write("\n")
      sys.stderr.flush()
