"""Ablation sweeps: every point of a config's get_sweep(arg) trained as its own process.

A sweep is a list of override dicts {"dotted.key": value} (built with configs.common.product
and zip_). Point i of `configs/X.py:arg` runs

    python -m launch.train --config=configs/X.py:arg --config.<key>=<value> ... \
        --workdir=ROOT/<i>_<slug of the overrides>

with its output in ROOT/<point>/log.txt. ROOT/sweep.json records the config and the points;
the names are stable, so relaunching the sweep skips points whose eval.json says "done" and
relaunches the others, which the trainer resumes from their last checkpoint. Points run as
local processes (N at a time) or as submitit jobs (LocalExecutor, or SLURM through
AutoExecutor). Results are gathered by experiments.sweep_results.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import time

from experiments import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = "sweep.json"
LOG = "log.txt"
EXECUTORS = ("local", "submitit_local", "slurm")


@dataclasses.dataclass(frozen=True)
class Point:
  """One sweep point: its index, its directory name under the root and its overrides."""
  index: int
  name: str
  overrides: dict


@dataclasses.dataclass
class Sweep:
  """A planned sweep: the config file (absolute path), its argument and the points."""
  config_file: str
  arg: str | None
  points: list
  config: object  # get_config(arg), before overrides

  def manifest(self) -> dict:
    """The JSON record written to ROOT/sweep.json."""
    spec = self.config_file + (f":{self.arg}" if self.arg else "")
    return {"config": spec, "config_file": self.config_file, "arg": self.arg,
            "varying": varying_keys([p.overrides for p in self.points]),
            "points": [{"index": p.index, "name": p.name, "overrides": p.overrides}
                       for p in self.points]}


@dataclasses.dataclass
class Outcome:
  """What happened to one point in a sweep run."""
  point: Point
  status: str            # skipped (was done) | done | failed | incomplete (exited before the end)
  started_from: str      # new | partial (resumed from a checkpoint) | done
  returncode: int | None
  log: str
  seconds: float = 0.0


def split_spec(spec: str) -> tuple[str, str | None]:
  """"configs/x.py:k=v,..." -> ("configs/x.py", "k=v,..."); the argument may be absent."""
  if not spec:
    raise ValueError(f"config must be a path like configs/x.py[:arg], got {spec!r}")
  path, sep, arg = spec.partition(":")
  return path, (arg if sep and arg else None)


def load_module(path: str):
  """Import a config file by path (as config_flags does)."""
  if not os.path.isfile(path):
    raise ValueError(f"config file {path!r} does not exist")
  name = "sweep_config_" + re.sub(r"\W", "_", os.path.abspath(path))
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _leaf(config, key: str):
  node = config
  parts = key.split(".")
  for i, part in enumerate(parts):
    if not hasattr(node, "keys") or part not in node:
      raise ValueError(f"sweep override key {key!r} is not in the config "
                       f"(no field {'.'.join(parts[:i + 1])!r})")
    node = node[part]
  if hasattr(node, "keys"):
    raise ValueError(f"sweep override key {key!r} names a config section, not a field")
  return node


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def check_override(config, key: str, value) -> None:
  """Raise ValueError unless config has field `key` and `value` fits its type."""
  if not isinstance(key, str) or not key:
    raise ValueError(f"sweep override keys must be dotted field names, got {key!r}")
  current = _leaf(config, key)
  ok = {
      bool: lambda v: isinstance(v, bool),
      int: _is_int,
      float: lambda v: _is_int(v) or isinstance(v, float),
      str: lambda v: isinstance(v, str),
      tuple: lambda v: isinstance(v, (tuple, list)),
      list: lambda v: isinstance(v, (tuple, list)),
  }
  kind = type(current)
  if current is None:  # untyped field: any scalar or tuple the flag parser can read back
    if not isinstance(value, (bool, int, float, str, tuple, list)):
      raise ValueError(f"sweep override {key}={value!r}: unsupported value type {type(value).__name__}")
  elif kind not in ok:
    raise ValueError(f"sweep override key {key!r}: fields of type {kind.__name__} cannot be swept")
  elif not ok[kind](value):
    raise ValueError(f"sweep override {key}={value!r}: the field is of type {kind.__name__} "
                     f"(currently {current!r}), got {type(value).__name__}")


def flag_value(value) -> str:
  """A value as ml_collections config_flags parses it back (--config.key=<this>)."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, float):
    return repr(value)
  if isinstance(value, (tuple, list)):
    return repr(tuple(tuple(v) if isinstance(v, list) else v for v in value))
  return str(value)


def override_flags(overrides: dict) -> list[str]:
  """["--config.<key>=<value>", ...] for a point's overrides."""
  return [f"--config.{k}={flag_value(v)}" for k, v in overrides.items()]


def varying_keys(points: list[dict]) -> list[str]:
  """Keys whose value differs between points (in first-seen order)."""
  keys = list(dict.fromkeys(k for p in points for k in p))
  return [k for k in keys if len({json.dumps(p.get(k), sort_keys=True) for p in points}) > 1]


def _slug_value(value) -> str:
  if isinstance(value, (tuple, list)):
    return "x".join(_slug_value(v) for v in value)
  if isinstance(value, bool):
    return str(value).lower()
  return re.sub(r"[^A-Za-z0-9._+-]+", "-", str(value)) or "empty"


def point_name(index: int, overrides: dict, keys: list[str], width: int) -> str:
  """<index>_<key>=<value>_... over `keys` (the varying ones), at most ~100 characters."""
  slug = "_".join(f"{k}={_slug_value(overrides[k])}" for k in keys if k in overrides)
  slug = slug[:96].rstrip("_")
  return f"{index:0{width}d}" + (f"_{slug}" if slug else "")


def plan(spec: str) -> Sweep:
  """Load configs/X.py:arg, expand get_sweep(arg) and check every point before anything runs."""
  path, arg = split_spec(spec)
  module = load_module(path)
  if not hasattr(module, "get_sweep"):
    raise ValueError(f"config file {path!r} defines no get_sweep(arg)")
  config = module.get_config(arg)
  points = module.get_sweep(arg)
  if not isinstance(points, list) or not points or not all(isinstance(p, dict) for p in points):
    raise ValueError(f"get_sweep of {path!r} must return a non-empty list of override dicts, "
                     f"got {points!r}")
  seen = set()
  for i, overrides in enumerate(points):
    for key, value in overrides.items():
      try:
        check_override(config, key, value)
      except ValueError as e:
        raise ValueError(f"point {i}: {e}") from None
    fingerprint = json.dumps(overrides, sort_keys=True)
    if fingerprint in seen:
      raise ValueError(f"point {i} repeats an earlier point: {overrides}")
    seen.add(fingerprint)
  # JSON round trip: tuples become lists, as they will be in sweep.json.
  points = [json.loads(json.dumps(p)) for p in points]
  keys = varying_keys(points) or list(dict.fromkeys(k for p in points for k in p))
  width = max(2, len(str(len(points) - 1)))
  named = [Point(i, point_name(i, p, keys, width), p) for i, p in enumerate(points)]
  return Sweep(os.path.abspath(path), arg, named, config)


def write_manifest(sweep: Sweep, root: str) -> str:
  """Write ROOT/sweep.json, or check that the one there describes the same sweep."""
  path = os.path.join(root, MANIFEST)
  manifest = sweep.manifest()
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    if (old.get("config_file"), old.get("arg"), old.get("points")) != (
        manifest["config_file"], manifest["arg"], manifest["points"]):
      raise ValueError(f"workdir {root!r} holds a different sweep ({old.get('config')!r}, "
                       f"{len(old.get('points', []))} points); use a new --workdir")
    return path
  os.makedirs(root, exist_ok=True)
  with open(path, "w") as f:
    json.dump(manifest, f, indent=2)
  return path


def read_manifest(root: str) -> dict:
  """ROOT/sweep.json."""
  path = os.path.join(root, MANIFEST)
  if not os.path.exists(path):
    raise ValueError(f"root {root!r} has no {MANIFEST}: is it a sweep workdir?")
  with open(path) as f:
    return json.load(f)


def read_eval(workdir: str) -> dict | None:
  """WORKDIR/eval.json, or None if absent or unreadable."""
  try:
    with open(os.path.join(workdir, "eval.json")) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def point_state(workdir: str) -> str:
  """done (eval.json says so) | partial (a checkpoint to resume from) | new."""
  summary = read_eval(workdir)
  if summary is not None and summary.get("status") == "done":
    return "done"
  ckpt = os.path.join(workdir, "checkpoints")
  if os.path.isdir(ckpt) and any(d.isdigit() for d in os.listdir(ckpt)):
    return "partial"
  return "new"


def train_command(sweep: Sweep, point: Point, root: str) -> list[str]:
  """The launch.train command line of one point (progress bar off unless the point sets it)."""
  spec = sweep.config_file + (f":{sweep.arg}" if sweep.arg else "")
  extra = {}
  if "log.progress" not in point.overrides and "log" in sweep.config and "progress" in sweep.config.log:
    extra["log.progress"] = False
  return [sys.executable, "-m", "launch.train", f"--config={spec}",
          *override_flags({**point.overrides, **extra}),
          f"--workdir={os.path.join(os.path.abspath(root), point.name)}"]


class _Process:
  """A point running as a local subprocess."""

  def __init__(self, command, log_path, env):
    self._log = open(log_path, "a")
    self._proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=self._log,
                                  stderr=subprocess.STDOUT)

  def poll(self) -> int | None:
    rc = self._proc.poll()
    if rc is not None:
      self._log.close()
    return rc

  def stop(self, grace_s: float) -> None:
    """SIGTERM (the trainer checkpoints and exits), then kill after grace_s."""
    if self._proc.poll() is None:
      self._proc.terminate()
      try:
        self._proc.wait(grace_s)
      except subprocess.TimeoutExpired:
        self._proc.kill()
        self._proc.wait()
    self._log.close()


class _Job:
  """A point running as a submitit job (the command's output goes to the point's log.txt)."""

  def __init__(self, executor, command, log_path, env):
    import submitit
    shell = f"cd {shlex.quote(REPO)} && exec {shlex.join(command)} >> {shlex.quote(log_path)} 2>&1"
    self._log_path = log_path
    self._job = executor.submit(submitit.helpers.CommandFunction(["bash", "-c", shell],
                                                                 verbose=False, env=env))

  def poll(self) -> int | None:
    if not self._job.done():
      return None
    try:
      self._job.result()
      return 0
    except Exception as e:  # the job failed: submitit re-raises its error here
      with open(self._log_path, "a") as f:
        f.write(f"\n[sweep] submitit job {self._job.job_id} failed: {e}\n")
      return 1

  def stop(self, grace_s: float) -> None:
    del grace_s
    self._job.cancel(check=False)


def make_executor(kind: str, root: str, *, timeout_min: int, slurm_partition: str | None = None,
                  slurm_gpus: int = 0):
  """None for plain local processes, else a configured submitit executor."""
  if kind not in EXECUTORS:
    raise ValueError(f"executor must be one of {EXECUTORS}, got {kind!r}")
  if not (isinstance(timeout_min, int) and timeout_min >= 1):
    raise ValueError(f"timeout_min must be an integer >= 1, got {timeout_min!r}")
  if kind == "local":
    return None
  import submitit
  folder = os.path.join(root, ".submitit", "%j")
  if kind == "submitit_local":
    executor = submitit.LocalExecutor(folder=folder)
    executor.update_parameters(timeout_min=timeout_min)
    return executor
  if not slurm_partition:
    raise ValueError("slurm_partition is required with executor='slurm'")
  executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
  executor.update_parameters(timeout_min=timeout_min, slurm_partition=slurm_partition,
                             gpus_per_node=slurm_gpus, tasks_per_node=1, nodes=1,
                             name="sweep")
  return executor


def run(sweep: Sweep, root: str, *, executor: str = "local", parallel: int = 1,
        timeout_min: int = 24 * 60, slurm_partition: str | None = None, slurm_gpus: int = 0,
        env: dict | None = None, echo=None, poll_s: float = 0.2,
        grace_s: float = 60.0) -> list[Outcome]:
  """Run every point not yet done into ROOT/<point>/; returns one Outcome per point.

  parallel: points at a time (0: all at once); with several local processes at once, GPU
  memory is not preallocated (XLA_PYTHON_CLIENT_PREALLOCATE=false unless env sets it). env:
  the environment of each train process (default: this one's). echo(str), if given, receives a line per start / finish. On
  KeyboardInterrupt the running points get SIGTERM (they checkpoint; a rerun resumes them).
  """
  if not (_is_int(parallel) and parallel >= 0):
    raise ValueError(f"parallel must be an integer >= 0, got {parallel!r}")
  backend = make_executor(executor, root, timeout_min=timeout_min,
                          slurm_partition=slurm_partition, slurm_gpus=slurm_gpus)
  write_manifest(sweep, root)
  say = echo or (lambda line: None)
  env = dict(os.environ if env is None else env)
  if backend is None and parallel != 1:  # several JAX processes share the accelerator
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  outcomes, queue = {}, []
  for point in sweep.points:
    workdir = os.path.join(root, point.name)
    log = os.path.join(workdir, LOG)
    state = point_state(workdir)
    if state == "done":
      outcomes[point.index] = Outcome(point, "skipped", state, None, log)
    else:
      queue.append((point, state))
  say(f"sweep {sweep.manifest()['config']}: {len(sweep.points)} points, "
      f"{len(sweep.points) - len(queue)} already done, {len(queue)} to run ({executor})")
  running = {}
  try:
    while queue or running:
      while queue and (parallel == 0 or len(running) < parallel):
        point, state = queue.pop(0)
        workdir = os.path.join(root, point.name)
        os.makedirs(workdir, exist_ok=True)
        log = os.path.join(workdir, LOG)
        command = train_command(sweep, point, root)
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        with open(log, "a") as f:
          f.write(f"[sweep] {stamp} launch ({state}): {shlex.join(command)}\n")
        handle = (_Process(command, log, env) if backend is None
                  else _Job(backend, command, log, env))
        running[point.index] = (point, state, handle, time.perf_counter())
        say(f"start {point.name}" + (" (resuming)" if state == "partial" else ""))
      for index, (point, state, handle, t0) in list(running.items()):
        rc = handle.poll()
        if rc is None:
          continue
        del running[index]
        workdir = os.path.join(root, point.name)
        finished = point_state(workdir) == "done"
        status = "done" if finished else ("incomplete" if rc in (0, workdir_lib.PREEMPTED_EXIT_STATUS) else "failed")
        outcomes[index] = Outcome(point, status, state, rc, os.path.join(workdir, LOG),
                                  time.perf_counter() - t0)
        say(f"{status} {point.name} ({time.perf_counter() - t0:.1f} s)")
      if running:
        time.sleep(poll_s)
  except KeyboardInterrupt:
    for point, _, handle, _ in running.values():
      handle.stop(grace_s)
    raise
  return [outcomes[i] for i in sorted(outcomes)]


def tail(path: str, lines: int = 15) -> str:
  """The last lines of a log file ("" if absent)."""
  try:
    with open(path, errors="replace") as f:
      return "".join(f.readlines()[-lines:])
  except OSError:
    return ""
