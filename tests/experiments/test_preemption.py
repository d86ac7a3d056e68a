"""Killed and preempted runs resume from the workdir and end exactly where an uninterrupted one does."""

import signal
import time

import numpy as np
import pytest

from tests.experiments.helpers import launch

CONFIG = "--config=configs/cfm_toy.py:runlocal=true"
FLAGS = ("--config.train.num_steps=2000", "--config.train.checkpoint_every=50", "--config.train.log_every=25",
         "--config.log.progress=false", "--config.eval.num_samples=64")


def _train(workdir, wait=True):
  return launch("launch.train", CONFIG, f"--workdir={workdir}", *FLAGS, wait=wait)


def _samples(workdir, out):
  proc = launch("launch.sample", f"--workdir={workdir}", "--num_samples=256", "--seed=1",
                f"--out={out}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  return np.load(out)


def _wait_for_checkpoint(proc, workdir, min_step, timeout=180):
  t0 = time.time()
  while time.time() - t0 < timeout:
    ckpts = workdir / "checkpoints"
    if ckpts.exists() and any(d.isdigit() and int(d) >= min_step for d in (p.name for p in ckpts.iterdir())):
      return
    if proc.poll() is not None:
      pytest.fail(f"training exited early: {proc.stderr.read()[-2000:]}")
    time.sleep(0.05)
  pytest.fail("no checkpoint appeared")


@pytest.fixture(scope="module")
def reference_samples(tmp_path_factory):
  root = tmp_path_factory.mktemp("reference")
  proc = _train(root / "run")
  assert proc.returncode == 0, proc.stderr[-2000:]
  return _samples(root / "run", root / "x.npy")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_interrupted_run_resumes_to_identical_samples(tmp_path, reference_samples, sig):
  workdir = tmp_path / "run"
  proc = _train(workdir, wait=False)
  _wait_for_checkpoint(proc, workdir, 100)
  proc.send_signal(sig)
  proc.wait(timeout=120)
  if sig == signal.SIGTERM:
    assert proc.returncode == 75, proc.stderr.read()[-2000:]  # saved, then "preempted" status
    assert '"status": "preempted"' in proc.stdout.read()
  else:
    assert proc.returncode == -signal.SIGKILL
  resumed = _train(workdir)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert '"status": "done"' in resumed.stdout
  np.testing.assert_array_equal(_samples(workdir, tmp_path / "x.npy"), reference_samples)
