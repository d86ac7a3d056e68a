"""A multi-process job on this machine: N processes x D CPU devices, talking over gloo.

What the multi-process tests and the scaling benchmark start, and the quickest way to
try a multi-host setting on a laptop. Each process is the same launcher command
(`python -m launch.train ...`) plus --coordinator_address=127.0.0.1:<free port>
--num_processes=N --process_id=i, with JAX_NUM_CPU_DEVICES=D and gloo collectives.

    job = local_cluster.start(["-m", "launch.train", "--config=configs/default.py",
                               "--workdir=/tmp/w"], num_processes=2, devices_per_process=4)
    codes = job.wait(timeout=600)   # [0, 0]
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_env(devices_per_process: int, base: dict | None = None) -> dict:
  """The environment of one process: D CPU devices, gloo collectives, no GPU / TPU."""
  env = dict(os.environ if base is None else base)
  env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices_per_process),
             JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo", PYTHONUNBUFFERED="1")
  env.pop("XLA_FLAGS", None)  # a forced host device count would override the count above
  return env


@dataclasses.dataclass
class LocalJob:
  """The processes of one local job, their log files and the coordinator address."""
  processes: list
  logs: list
  address: str

  def wait(self, timeout: float) -> list[int]:
    """Exit codes of every process; processes still running after `timeout` s are killed
    (their code is then -9) so that a hang never outlives the caller."""
    deadline = time.monotonic() + timeout
    codes = []
    for p in self.processes:
      try:
        codes.append(p.wait(timeout=max(0.0, deadline - time.monotonic())))
      except subprocess.TimeoutExpired:
        self.kill()
        codes.append(p.wait())
    return codes

  def signal(self, process_id: int, sig: int = signal.SIGTERM) -> None:
    self.processes[process_id].send_signal(sig)

  def kill(self) -> None:
    for p in self.processes:
      if p.poll() is None:
        p.kill()

  def log(self, process_id: int) -> str:
    with open(self.logs[process_id], errors="replace") as f:
      return f.read()


def start(argv: list[str], *, num_processes: int = 2, devices_per_process: int = 4,
          log_dir: str, port: int | None = None, cwd: str | None = None,
          extra_flags: tuple[str, ...] = (), env: dict | None = None) -> LocalJob:
  """Start `python <argv> --coordinator_address=... --num_processes=N --process_id=i` N times.

  With num_processes=1 the command runs alone, without the coordinator flags (a plain
  single-process run on `devices_per_process` CPU devices). stdout and stderr of
  process i go to LOG_DIR/process_<i>.log; `env` adds environment variables.
  """
  if num_processes < 1 or devices_per_process < 1:
    raise ValueError(f"num_processes and devices_per_process must be >= 1, got "
                     f"{num_processes} and {devices_per_process}")
  address = f"127.0.0.1:{port or free_port()}"
  os.makedirs(log_dir, exist_ok=True)
  processes, logs = [], []
  env = {**process_env(devices_per_process), **(env or {})}
  for i in range(num_processes):
    path = os.path.join(log_dir, f"process_{i}.log")
    with open(path, "w") as log:
      job_flags = ([f"--coordinator_address={address}", f"--num_processes={num_processes}",
                    f"--process_id={i}"] if num_processes > 1 else [])
      cmd = [sys.executable, *argv, *job_flags, *extra_flags]
      processes.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                        cwd=cwd))
    logs.append(path)
  return LocalJob(processes, logs, address)
