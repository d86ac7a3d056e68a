"""launch.train that SIGKILLs itself at the K-th file operation under a directory.

Usage: FAULT_AT=K FAULT_ROOT=WORKDIR/checkpoints python -m tests.launch.fault_injection
--config=... --workdir=WORKDIR ...  (the launch.train flags). The operations counted
are Python-level opens for writing, renames, replaces, mkdirs and removals whose path
lies under FAULT_ROOT (orbax writes its metadata, creates and renames its step
directories through them), so K = 1, 2, ... walks through the points of a checkpoint
write. Exits with status 0 and prints "fault point not reached" if the run made fewer
than K such operations. A test tool: nothing in the library imports it.
"""

import builtins
import io
import os
import signal
import sys

AT = int(os.environ["FAULT_AT"])
ROOT = os.path.abspath(os.environ["FAULT_ROOT"])
_count = 0


def _hit(path) -> None:
  global _count
  if isinstance(path, int):
    return
  if os.path.abspath(os.fspath(path)).startswith(ROOT):
    _count += 1
    if _count == AT:
      os.kill(os.getpid(), signal.SIGKILL)


def _wrap(fn, writes_only=False):
  def wrapped(path, *args, **kwargs):
    mode = args[0] if args else kwargs.get("mode", "r")
    if not writes_only or any(c in str(mode) for c in "wax+"):
      _hit(path)
    return fn(path, *args, **kwargs)
  return wrapped


def _wrap2(fn):
  def wrapped(src, dst, *args, **kwargs):
    _hit(dst)
    return fn(src, dst, *args, **kwargs)
  return wrapped


builtins.open = io.open = _wrap(io.open, writes_only=True)
for name in ("mkdir", "makedirs", "remove", "unlink", "rmdir"):
  setattr(os, name, _wrap(getattr(os, name)))
for name in ("rename", "replace"):
  setattr(os, name, _wrap2(getattr(os, name)))

if __name__ == "__main__":
  from launch import common, train
  sys.argv[0] = "launch.train"
  try:
    common.run(train.main)
  finally:
    if _count < AT:
      print(f"fault point not reached ({_count} operations)", flush=True)
