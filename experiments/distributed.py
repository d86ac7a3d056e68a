"""Multi-process runs on JAX's distributed runtime: start-up, agreement, host copies, preemption.

One training job may span several processes (a TPU pod slice, a multi-node GPU job,
or several processes on one machine talking over gloo). Every process runs the same
program on a mesh over the devices of all processes (experiments/sharding.py); JAX's
coordination service (`jax.distributed`) connects them. Nothing here coordinates by
itself: start-up, barriers, gathers and the preemption sync point are JAX's.

* `initialize(...)` validates the flags (a process id outside [0, num_processes), an
  address that is not host:port), selects gloo for CPU collectives, and calls
  `jax.distributed.initialize`. JAX aborts the process when the coordinator does not
  answer in time; a watchdog thread turns that into one line naming the address
  (exit status 2) a little before JAX's own deadline, so a job never hangs silently.
* `is_primary()`: process 0 writes logs, metrics, figures, progress and small files;
  every process writes its part of a checkpoint through orbax.
* `all_ok(flag)`: True on every process iff the flag is True on every process (a
  start-up check that only process 0 makes, e.g. the workdir lock, must stop all).
* `host_local(tree)`: a copy of a (possibly multi-process) pytree that the calling
  process can compute with alone: sampling and evaluation then run on each process's
  own devices, identically everywhere, and only process 0 writes the results.
* `Preemption`: SIGTERM (or SIGINT) to any process makes every process stop at the
  same step (JAX's preemption sync point), so all of them save the same checkpoint.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import jax
import numpy as np

USER_ERROR_STATUS = 2  # launch/common.py's status for an error in what the user asked for
# The watchdog reports this many seconds before JAX's own initialization deadline.
_WATCHDOG_MARGIN_S = 5


def check_flags(coordinator_address: str | None, num_processes: int | None,
                process_id: int | None) -> None:
  """ValueError naming the flag for values that cannot describe a job."""
  if num_processes is not None and num_processes < 1:
    raise ValueError(f"--num_processes must be >= 1, got {num_processes}")
  if process_id is not None:
    if process_id < 0 or (num_processes is not None and process_id >= num_processes):
      bound = "num_processes" if num_processes is None else num_processes
      raise ValueError(f"--process_id must be in [0, {bound}), got {process_id}")
  if coordinator_address is not None:
    host, sep, port = coordinator_address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
      raise ValueError(f"--coordinator_address must be host:port (e.g. 10.0.0.1:1234), got "
                       f"{coordinator_address!r}")
  explicit = [v is not None for v in (coordinator_address, num_processes, process_id)]
  if any(explicit) and not all(explicit) and not _cluster_detected():
    raise ValueError("--coordinator_address, --num_processes and --process_id go together "
                     "(or none of them, with --distributed, for JAX's cluster detection)")


def _cluster_detected() -> bool:
  """Whether JAX's cluster detection can fill in missing values (SLURM, TPU, MPI, env)."""
  names = ("SLURM_JOB_ID", "TPU_WORKER_ID", "OMPI_COMM_WORLD_SIZE", "JAX_COORDINATOR_ADDRESS",
           "CLOUD_TPU_TASK_ID", "MEGASCALE_COORDINATOR_ADDRESS")
  return any(name in os.environ for name in names)


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, initialization_timeout: int = 300,
               heartbeat_timeout: int = 100) -> None:
  """jax.distributed.initialize with checked flags and a named, bounded start-up.

  With no address / count / id, JAX detects the cluster (SLURM, Cloud TPU, Open MPI,
  Kubernetes; JAX_COORDINATOR_ADDRESS overrides the detected address).
  Must run before anything touches a JAX backend. heartbeat_timeout: seconds after
  which the survivors of a dead process abort (JAX's coordination service), so a
  `kill -9` of one process ends the whole job in bounded time.
  """
  check_flags(coordinator_address, num_processes, process_id)
  if initialization_timeout < 1 or heartbeat_timeout < 1:
    raise ValueError(f"--initialization_timeout and --heartbeat_timeout must be >= 1 s, got "
                     f"{initialization_timeout} and {heartbeat_timeout}")
  # CPU devices of different processes reduce through gloo (harmless on GPU / TPU).
  if os.environ.get("JAX_CPU_COLLECTIVES_IMPLEMENTATION") is None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  where = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "the detected cluster")
  who = "" if process_id is None else f" (process {process_id} of {num_processes})"

  def give_up():
    print(f"error: no answer from the coordinator at {where} within {initialization_timeout} s"
          f"{who}: every process of the job must be started with the same "
          f"--coordinator_address (process 0's host, a free port) and --num_processes",
          file=sys.stderr, flush=True)
    os._exit(USER_ERROR_STATUS)  # JAX would abort with a stack trace instead

  watchdog = threading.Timer(initialization_timeout, give_up)
  watchdog.daemon = True
  watchdog.start()
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               initialization_timeout=initialization_timeout + _WATCHDOG_MARGIN_S,
                               heartbeat_timeout_seconds=heartbeat_timeout)
  finally:
    watchdog.cancel()


def is_primary() -> bool:
  """Process 0: the one that writes logs, metrics, figures, progress and small files."""
  return jax.process_index() == 0


def multi_process() -> bool:
  return jax.process_count() > 1


def sync_each_step() -> bool:
  """Whether a training loop must wait for each step before dispatching the next.

  CPU devices with collectives (several CPU devices, in one process or several): XLA:CPU
  can deadlock when steps with all-reduces are in flight back to back (seen with jaxlib
  0.10 under load: one device never joins the all-reduce the others wait in; in one
  process XLA aborts after its 40 s rendezvous timeout, across processes gloo waits
  forever). Waiting for each step costs little on CPU. GPU and TPU runs, and one CPU
  device, keep asynchronous dispatch.
  """
  return jax.device_count() > 1 and jax.devices()[0].platform == "cpu"


def all_ok(flag: bool) -> bool:
  """True on every process iff `flag` is True on every process (all processes must call)."""
  if not multi_process():
    return bool(flag)
  from jax.experimental import multihost_utils
  flags = multihost_utils.process_allgather(np.asarray(bool(flag), np.int32))
  return bool(np.all(flags))


def barrier(name: str) -> None:
  """Wait until every process reaches the barrier `name` (no-op with one process)."""
  if multi_process():
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def host_local(tree):
  """A copy of `tree` that this process can compute with alone.

  Arrays whose shards all live on this process stay as they are; replicated arrays of
  a multi-process mesh give their local copy; sharded ones (FSDP) are gathered from
  every process (a collective: all processes call this with the same tree).
  """
  if not multi_process():
    return tree
  from jax.experimental import multihost_utils

  def leaf(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return x
    if x.is_fully_replicated:
      return x.addressable_data(0)
    return jax.device_put(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree.map(leaf, tree)


class Preemption:
  """`reached(step)` turns True, at the same step on every process, after a SIGTERM.

  One process: SIGTERM and SIGINT set a flag. Several processes: JAX's preemption
  notifier catches SIGTERM in whichever process receives it and the coordination
  service agrees on a step at which `reached` is True everywhere
  (multihost_utils.reached_preemption_sync_point); SIGINT (Ctrl-C) is turned into a
  SIGTERM of the same process so that it takes that path. Call `reached` once per step
  with non-decreasing steps on every process.
  """

  def __init__(self):
    self._event = threading.Event()
    self._previous = {}
    self._multi = multi_process()
    if threading.current_thread() is not threading.main_thread():
      return
    signals = (signal.SIGINT,) if self._multi else (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
      self._previous[sig] = signal.signal(sig, self._handler)

  def _handler(self, signum, frame):
    del frame
    if self._multi:
      os.kill(os.getpid(), signal.SIGTERM)   # JAX's notifier owns SIGTERM
    else:
      self._event.set()

  def reached(self, step: int) -> bool:
    if not self._multi:
      return self._event.is_set()
    from jax.experimental import multihost_utils
    return bool(multihost_utils.reached_preemption_sync_point(int(step)))

  def restore_handlers(self) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}
