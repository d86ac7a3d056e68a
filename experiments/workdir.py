"""The workdir's guards: an exclusive lock, writes that cannot tear, and config drift.

A workdir is the only state of a run. Three things keep ordinary mistakes from
corrupting it:

* `WorkdirLock`: a training process holds an exclusive OS lock (`fcntl.flock`) on
  WORKDIR/.lock. The kernel drops the lock when the process dies, `kill -9`
  included, so a stale lock cannot exist; the file only records the holder's pid
  for the message a second launch gets (`WorkdirLockedError`).
* `atomic_write_text` / `atomic_write_json`: small files are written to a
  temporary file in the same directory, flushed, fsynced and renamed over the
  target (`os.replace` is atomic on POSIX), so a reader sees the old file or the
  new one, never half of one.
* `config_drift` / `check_config_drift`: on a relaunch the new config is compared
  with the stored config.json field by field. Fields in `RESUMABLE` (run length,
  logging, evaluation, sampling and checkpoint cadence, progress display, the
  layout over devices) may change and are recorded in the append-only WORKDIR/config_history.jsonl; any
  other difference (data, model, family, optimiser, seed, ...) raises
  `ConfigDriftError` listing every differing field, before anything is written.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile
import time

# Dotted config fields (or whole sections, ending in ".") that may change on resume.
RESUMABLE = (
    "train.num_steps", "train.log_every", "train.checkpoint_every", "train.plot_every",
    "train.keep", "train.keep_every", "train.async_checkpoint",
    # the layout over devices: the global batch and every loss do not depend on it, and
    # orbax restores a checkpoint onto any mesh (resume on another topology)
    "train.num_devices", "train.param_sharding",
    "eval.", "sample.", "log.",
)
LOCK_FILE = ".lock"
# launch.train's exit status after a SIGTERM / SIGINT checkpoint (sysexits EX_TEMPFAIL:
# relaunch to resume), distinct from success (0), failure (1) and user errors (2).
PREEMPTED_EXIT_STATUS = 75
HISTORY_FILE = "config_history.jsonl"


class WorkdirError(ValueError):
  """A workdir that cannot be used as asked (a user error: reported as one line)."""


class WorkdirLockedError(WorkdirError):
  """Another live process holds the workdir's lock."""


class ConfigDriftError(WorkdirError):
  """The relaunch config differs from the stored one in fields that cannot change."""


def check_usable(workdir: str) -> str:
  """The absolute workdir, created if missing; WorkdirError if it is a file or not writable."""
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise WorkdirError(f"workdir {workdir} exists and is not a directory")
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise WorkdirError(f"cannot create workdir {workdir}: {e.strerror}") from None
  if not os.access(path, os.W_OK | os.X_OK):
    raise WorkdirError(f"workdir {workdir} is not writable")
  return path


class WorkdirLock:
  """An exclusive lock on WORKDIR/.lock, held while the process lives.

  Use as a context manager or acquire() / release(). acquire() never waits: if
  another process holds the lock it raises WorkdirLockedError naming the workdir
  and the holder's pid.
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd: int | None = None

  def acquire(self) -> "WorkdirLock":
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.close(fd)
      if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        raise
      raise WorkdirLockedError(
          f"workdir {self.workdir} is in use by another training process (pid "
          f"{holder_pid(self.workdir) or 'unknown'}); wait for it to finish or stop it") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    os.fsync(fd)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def holder_pid(workdir: str) -> int | None:
  """The pid recorded by the last lock holder (it may have exited), or None."""
  try:
    with open(os.path.join(workdir, LOCK_FILE)) as f:
      return int(f.read().strip() or 0) or None
  except (OSError, ValueError):
    return None


def is_locked(workdir: str) -> bool:
  """True while a live process holds the workdir's lock."""
  path = os.path.join(workdir, LOCK_FILE)
  if not os.path.exists(path):
    return False
  fd = os.open(path, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except OSError:
    return True
  finally:
    os.close(fd)
  return False


def atomic_write_text(path: str, text: str) -> str:
  """Write text to path via a temporary file and a rename; returns path."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                             dir=directory)
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def atomic_write_json(path: str, obj, **dump_kwargs) -> str:
  """json.dump(obj) to path atomically (indent 2 unless given); returns path."""
  dump_kwargs.setdefault("indent", 2)
  return atomic_write_text(path, json.dumps(obj, **dump_kwargs) + "\n")


def _flatten(tree, prefix="") -> dict:
  """{dotted.field: leaf} of a nested dict (lists compared as lists)."""
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(_flatten(value, name + "."))
    else:
      out[name] = list(value) if isinstance(value, tuple) else value
  return out


def _resumable(field: str) -> bool:
  return any(field.startswith(r) if r.endswith(".") else field == r for r in RESUMABLE)


def config_drift(old: dict, new: dict) -> tuple[dict, dict]:
  """(allowed, refused): {field: [old, new]} of every differing field, split by RESUMABLE.

  old, new: plain nested dicts (config.to_dict() or the stored config.json).
  A field present on one side only counts as a difference (its value None on the other).
  """
  a, b = _flatten(json.loads(json.dumps(old))), _flatten(json.loads(json.dumps(new)))
  allowed, refused = {}, {}
  for field in sorted(set(a) | set(b)):
    if a.get(field) != b.get(field):
      (allowed if _resumable(field) else refused)[field] = [a.get(field), b.get(field)]
  return allowed, refused


def _short(value) -> str:
  text = json.dumps(value)
  return text if len(text) <= 40 else text[:37] + "..."


def check_config_drift(workdir: str, new: dict) -> dict:
  """The allowed changes against WORKDIR/config.json ({} for a new workdir).

  Raises ConfigDriftError listing every field that may not change on resume; nothing
  is written either way.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return {}
  try:
    with open(path) as f:
      old = json.load(f)
  except (OSError, ValueError) as e:
    raise WorkdirError(f"cannot read {path} ({e}); start over with --reset or use another "
                       f"workdir") from None
  allowed, refused = config_drift(old, new)
  if refused:
    fields = "; ".join(f"config.{k}: {_short(v[0])} -> {_short(v[1])}" for k, v in refused.items())
    raise ConfigDriftError(
        f"workdir {workdir} was trained with another config ({len(refused)} field(s) differ: "
        f"{fields}); these cannot change on resume: relaunch with --reset to start over, or "
        f"use a new workdir")
  return allowed


def record_history(workdir: str, event: str, changes: dict, step: int | None = None) -> None:
  """Append one line to WORKDIR/config_history.jsonl (append-only; a single small write)."""
  row = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": event, "step": step,
         "changed": changes}
  with open(os.path.join(workdir, HISTORY_FILE), "a") as f:
    f.write(json.dumps(row) + "\n")
    f.flush()
    os.fsync(f.fileno())


# What a run writes into its workdir (reset removes exactly these; the lock stays).
RUN_FILES = ("config.json", "metrics.jsonl", HISTORY_FILE, "eval.json")
RUN_DIRS = ("checkpoints", "tensorboard")
RUN_PATTERNS = (("eval_", ".json"), ("samples_", ".png"))


def reset(workdir: str) -> list[str]:
  """Delete the run's files (checkpoints, metrics, config, evaluations, plots) to start over.

  Files the run did not write (a user's notes, sampled .npy files) are kept. Returns
  the removed names.
  """
  import shutil
  removed = []
  for name in sorted(os.listdir(workdir)):
    path = os.path.join(workdir, name)
    ours = (name in RUN_FILES or any(name.startswith(a) and name.endswith(b)
                                     for a, b in RUN_PATTERNS))
    if name in RUN_DIRS and os.path.isdir(path):
      shutil.rmtree(path)
    elif ours and os.path.isfile(path):
      os.remove(path)
    else:
      continue
    removed.append(name)
  return removed
