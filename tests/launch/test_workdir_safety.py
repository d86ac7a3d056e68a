"""A workdir that ordinary mistakes cannot corrupt, tried through the real launchers:
the lock, config drift, damaged checkpoints, torn metrics, interrupts, one-line errors.

Every run here is deterministic in (seed, step), so "resumes correctly" is checked
as "ends bit-identical to the uninterrupted run" (samples with a fixed seed).
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.experiments.helpers import REPO, launch
from tests.launch.test_launchers import _assert_one_line_error

CONFIG = "--config=configs/cfm_toy.py:runlocal=true"
FLAGS = ("--config.train.num_steps=40", "--config.train.checkpoint_every=10",
         "--config.train.log_every=5", "--config.train.keep=10",
         "--config.train.async_checkpoint=false", "--config.log.progress=false",
         "--config.eval.num_samples=64")


def _train(workdir, *extra, wait=True, timeout=300):
  return launch("launch.train", CONFIG, f"--workdir={workdir}", *FLAGS, *extra, wait=wait,
                timeout=timeout)


def _samples(workdir, out):
  proc = launch("launch.sample", f"--workdir={workdir}", "--num_samples=128", "--seed=3",
                f"--out={out}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  return np.load(out)


def _steps(workdir):
  return sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())


def _metric_steps(workdir):
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines() if l]
  return [r["step"] for r in rows if "event" not in r]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted run: its workdir and its samples."""
  workdir = tmp_path_factory.mktemp("reference") / "run"
  proc = _train(workdir)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return workdir, _samples(workdir, workdir / "x.npy")


def _wait_for(predicate, proc, timeout=120):
  t0 = time.time()
  while time.time() - t0 < timeout:
    if predicate():
      return
    if proc.poll() is not None:
      pytest.fail(f"training exited early: {proc.stderr.read()[-2000:]}")
    time.sleep(0.05)
  pytest.fail("timed out")


def test_second_launch_is_refused_and_a_killed_holder_leaves_no_stale_lock(tmp_path, reference):
  workdir = tmp_path / "run"
  first = launch("launch.train", CONFIG, f"--workdir={workdir}", *FLAGS[1:],
                 "--config.train.num_steps=100000", wait=False)
  try:
    _wait_for(lambda: (workdir / "checkpoints").exists() and _steps(workdir), first)
    second = _train(workdir)
    _assert_one_line_error(second, str(workdir), f"pid {first.pid}")
    # Sampling reads a consistent checkpoint while training goes on.
    proc = launch("launch.sample", f"--workdir={workdir}", "--num_samples=8", f"--out={tmp_path}/s")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["out"] == f"{tmp_path}/s.npy"  # the path actually written
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
  relaunch = _train(workdir)  # kill -9 left no stale lock; the shorter run is already past 40
  assert relaunch.returncode == 0, relaunch.stderr[-2000:]


@pytest.mark.parametrize("override", ["--config=configs/cfm_toy.py:runlocal=true,dataset=ring8",
                                      "--config.model.hidden=(16,)"], ids=["data", "model"])
def test_config_drift_is_refused_before_anything_is_written(tmp_path, reference, override):
  workdir = tmp_path / "run"
  import shutil
  shutil.copytree(reference[0], workdir)
  before = {p: (workdir / p).read_bytes() for p in ("config.json", "metrics.jsonl", "eval.json")}
  args = [a for a in (CONFIG,) if not override.startswith("--config=")] + [override]
  proc = launch("launch.train", *args, f"--workdir={workdir}", *FLAGS)
  _assert_one_line_error(proc, "--reset", "data.name" if "dataset" in override else "model.hidden")
  assert {p: (workdir / p).read_bytes() for p in before} == before
  assert not (workdir / "config_history.jsonl").exists() or "ring8" not in (
      workdir / "config_history.jsonl").read_text()
  np.testing.assert_array_equal(_samples(workdir, tmp_path / "x.npy"), reference[1])
  # Allowed changes are recorded; --reset starts over.
  proc = _train(workdir, "--config.eval.num_samples=32")
  assert proc.returncode == 0, proc.stderr[-2000:]
  history = [json.loads(l) for l in (workdir / "config_history.jsonl").read_text().splitlines()]
  assert history[-1]["changed"] == {"eval.num_samples": [64, 32]}
  proc = launch("launch.train", *args, f"--workdir={workdir}", *FLAGS, "--reset")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert json.loads((workdir / "eval.json").read_text())["step"] == 40


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_damaged_latest_checkpoint_falls_back_and_ends_identical(tmp_path, reference, damage):
  workdir = tmp_path / "run"
  import shutil
  shutil.copytree(reference[0], workdir)
  latest = workdir / "checkpoints" / "40"
  if damage == "truncated":
    for root, _, files in os.walk(latest):
      for name in files:
        path = os.path.join(root, name)
        with open(path, "r+b") as f:
          f.truncate(os.path.getsize(path) // 2)
  else:
    shutil.rmtree(latest)
    latest.mkdir()
  proc = _train(workdir)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "step 40 could not be restored" in proc.stderr
  assert (workdir / "checkpoints" / "corrupt_40").is_dir()  # moved aside, not deleted
  assert _steps(workdir)[-1] == 40
  assert _metric_steps(workdir) == list(range(5, 45, 5))  # each step once
  np.testing.assert_array_equal(_samples(workdir, tmp_path / "x.npy"), reference[1])


def test_no_restorable_checkpoint_refuses_to_start(tmp_path):
  workdir = tmp_path / "run"
  proc = _train(workdir, "--config.train.num_steps=10")
  assert proc.returncode == 0, proc.stderr[-2000:]
  for root, _, files in os.walk(workdir / "checkpoints" / "10"):
    for name in files:
      open(os.path.join(root, name), "w").close()
  _assert_one_line_error(_train(workdir), "no checkpoint", "--reset")
  assert (workdir / "checkpoints" / "corrupt_10").is_dir()


def test_torn_metrics_line_and_finished_relaunch(tmp_path, reference):
  workdir = tmp_path / "run"
  import shutil
  shutil.copytree(reference[0], workdir)
  with open(workdir / "metrics.jsonl", "a") as f:
    f.write('{"step": 45, "lo')
  rows_before = (workdir / "metrics.jsonl").read_text().count('"event": "eval"')
  proc = _train(workdir)  # finished: evaluation only
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "torn" in proc.stderr
  text = (workdir / "metrics.jsonl").read_text()
  assert text.count('"event": "eval"') == rows_before  # no duplicate rows
  assert _metric_steps(workdir) == list(range(5, 45, 5))
  assert '"event": "start", "compile_s"' not in text.split('"event": "eval"')[-1]


def test_sigint_saves_a_checkpoint_and_exits_preempted(tmp_path):
  workdir = tmp_path / "run"
  proc = launch("launch.train", CONFIG, f"--workdir={workdir}", *FLAGS[1:],
                "--config.train.num_steps=100000", "--config.train.checkpoint_every=100000",
                wait=False)
  _wait_for(lambda: (workdir / "metrics.jsonl").exists() and _metric_steps(workdir), proc)
  proc.send_signal(signal.SIGINT)
  proc.wait(timeout=120)
  assert proc.returncode == 75, proc.stderr.read()[-2000:]
  assert '"status": "preempted"' in proc.stdout.read()
  saved = _steps(workdir)  # Ctrl-C saved the steps since the start (no periodic save yet)
  assert saved and saved[-1] >= _metric_steps(workdir)[-1]
  resumed = _train(workdir, "--config.train.num_steps=100000", "--config.train.checkpoint_every=100000",
                   wait=False)  # resumes from the saved step
  _wait_for(lambda: any('"event": "resume"' in l and f'"step": {saved[-1]}' in l
                        for l in (workdir / "metrics.jsonl").read_text().splitlines()), resumed)
  resumed.send_signal(signal.SIGINT)
  resumed.wait(timeout=120)
  assert resumed.returncode == 75


def test_user_errors_of_every_launcher_are_one_line(tmp_path):
  a_file = tmp_path / "file"
  a_file.write_text("x")
  empty = tmp_path / "empty"
  empty.mkdir()
  _assert_one_line_error(launch("launch.sample", f"--workdir={empty}", f"--out={tmp_path}/x"),
                         "config.json")
  _assert_one_line_error(launch("launch.evaluate", f"--workdir={a_file}"), str(a_file))
  _assert_one_line_error(launch("launch.train", CONFIG, f"--workdir={tmp_path}/w",
                                "--config.eval.num_samples=0"), "config.eval.num_samples")
  _assert_one_line_error(launch("launch.benchmark", "--config=configs/bench_samplers.py:bogus=1"),
                         "bogus")
  _assert_one_line_error(launch("launch.figures", "nope"), "nope")
  _assert_one_line_error(launch("launch.sweep"), "--config")


def _fault_run(workdir, at):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "FAULT_AT": str(at),
         "FAULT_ROOT": str(workdir / "checkpoints")}
  return subprocess.run([sys.executable, "-m", "tests.launch.fault_injection", CONFIG,
                         f"--workdir={workdir}", *FLAGS], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def _fault_points(tmp_path, reference, points):
  """Kill the trainer at each of `points` (file operations into checkpoints/), relaunch,
  and compare with the uninterrupted run. Returns {point: outcome}."""
  outcomes = {}
  for at in points:
    workdir = tmp_path / f"at_{at}"
    proc = _fault_run(workdir, at)
    killed = proc.returncode == -signal.SIGKILL
    assert killed or "fault point not reached" in proc.stdout, proc.stderr[-2000:]
    resumed = _train(workdir)
    assert resumed.returncode == 0, (at, resumed.stderr[-2000:])
    np.testing.assert_array_equal(_samples(workdir, workdir / "x.npy"), reference[1],
                                  err_msg=f"kill point {at}")
    assert _metric_steps(workdir) == list(range(5, 45, 5)), at
    outcomes[at] = "killed" if killed else "not reached"
  return outcomes


def test_kills_during_checkpoint_writes_resume_identically(tmp_path, reference):
  outcomes = _fault_points(tmp_path, reference, (1, 4, 9))
  assert list(outcomes.values()).count("killed") == 3


@pytest.mark.slow
def test_kills_at_24_points_of_checkpoint_writes_resume_identically(tmp_path, reference):
  outcomes = _fault_points(tmp_path, reference, range(1, 49, 2))
  assert list(outcomes.values()).count("killed") >= 20, outcomes
