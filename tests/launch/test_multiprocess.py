"""Multi-process training on jax.distributed, on this machine: 2 processes x 4 CPU devices
talking over gloo (experiments/local_cluster.py), against the 1-process 8-device run.

The default suite trains the default job once in 2 processes (the module fixture), and
checks it against the same run in this test process (8 devices, tests/conftest.py):
per-step losses within 1e-5, one complete checkpoint directory, files written once,
and the 2-process checkpoint resuming in 1 process on 8 devices and on 1 device.
The slow tests kill, preempt and relaunch jobs and sample from several processes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from configs import default as default_config
from experiments import local_cluster, trainer
from tests.experiments.helpers import REPO, launch

STEPS, EVERY = 120, 60
FLAGS = (f"--config.train.num_steps={STEPS}", f"--config.train.checkpoint_every={EVERY}",
         "--config.train.log_every=1", "--config.train.keep=10", "--config.log.progress=false",
         "--config.eval.num_samples=128", "--config.eval.plot_samples=128")
TOLERANCE = 1e-5   # gloo's cross-process all-reduce sums in another order than XLA's in-process one


def _config(num_steps=STEPS, **train):
  c = default_config.get_config()
  c.train.update(num_steps=num_steps, checkpoint_every=EVERY, log_every=1, keep=10, **train)
  c.log.progress = False
  c.eval.num_samples = 128
  c.eval.plot_samples = 128
  return c


def _train_job(workdir, log_dir, *extra, num_processes=2, devices=4, heartbeat=None):
  flags = (*FLAGS, *extra) + ((f"--heartbeat_timeout={heartbeat}",) if heartbeat else ())
  return local_cluster.start(["-m", "launch.train", "--config=configs/default.py",
                              f"--workdir={workdir}", *flags],
                             num_processes=num_processes, devices_per_process=devices,
                             log_dir=str(log_dir), cwd=REPO)


def _losses(workdir) -> dict[int, float]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {r["step"]: r["loss"] for r in rows if "loss" in r and "event" not in r}


def _assert_losses_close(got: dict, want: dict, steps):
  steps = list(steps)
  assert all(s in got for s in steps), sorted(set(steps) - set(got))[:5]
  diff = max(abs(got[s] - want[s]) for s in steps)
  assert diff <= TOLERANCE, f"max |loss difference| {diff:.3g} over steps {steps[0]}..{steps[-1]}"


def _checkpoint_steps(workdir) -> list[int]:
  names = os.listdir(os.path.join(workdir, "checkpoints"))
  assert all(n.isdigit() for n in names), f"unfinished or stray entries: {names}"
  return sorted(int(n) for n in names)


def _job_failure(job, codes) -> str:
  return "\n".join(f"--- process {i} (exit {c}) ---\n{job.log(i)[-3000:]}"
                   for i, c in enumerate(codes))


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
  """The default job trained by 2 processes x 4 devices: (workdir, exit codes, job)."""
  root = tmp_path_factory.mktemp("two_process")
  workdir = root / "run"
  job = _train_job(workdir, root / "logs")
  codes = job.wait(timeout=900)
  return str(workdir), codes, job


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory):
  """The same job in this process on 8 devices (the reference)."""
  workdir = str(tmp_path_factory.mktemp("one_process") / "run")
  trainer.train_and_evaluate(_config(), workdir)
  return workdir


def test_two_processes_train_like_one_process_on_eight_devices(two_process_run, one_process_run):
  workdir, codes, job = two_process_run
  assert codes == [0, 0], _job_failure(job, codes)
  _assert_losses_close(_losses(workdir), _losses(one_process_run), range(1, STEPS + 1))
  # one checkpoint directory, every step complete (orbax commits by renaming a tmp dir)
  assert _checkpoint_steps(workdir) == [EVERY, STEPS]
  # process 0 alone writes the small files: one start row, one eval row, one summary
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert [r.get("event") for r in rows if r.get("event")] == ["start", "eval"]
  assert next(r for r in rows if r.get("event") == "start")["num_devices"] == 8
  summary = json.loads(job.log(0)[job.log(0).index("{\n"):])
  assert summary["status"] == "done" and summary["step"] == STEPS
  assert '"status"' not in job.log(1)
  with open(os.path.join(workdir, "eval.json")) as f:
    ev = json.load(f)
  with open(os.path.join(one_process_run, "eval.json")) as f:
    ref = json.load(f)
  assert abs(ev["w2"] - ref["w2"]) < 1e-3, (ev["w2"], ref["w2"])


@pytest.mark.parametrize("num_devices", [8, 1])
def test_two_process_checkpoint_resumes_in_one_process(two_process_run, tmp_path, num_devices):
  workdir, codes, job = two_process_run
  assert codes == [0, 0], _job_failure(job, codes)
  copy = tmp_path / "resumed"
  shutil.copytree(workdir, copy)
  shutil.rmtree(copy / "checkpoints" / str(STEPS))   # resume from the middle checkpoint
  os.remove(copy / "eval.json")
  summary = trainer.train_and_evaluate(_config(num_devices=num_devices), str(copy))
  assert summary["status"] == "done" and summary["step"] == STEPS
  with open(copy / "metrics.jsonl") as f:
    events = [json.loads(line).get("event") for line in f]
  assert "resume" in events
  _assert_losses_close(_losses(str(copy)), _losses(workdir), range(EVERY + 1, STEPS + 1))


def test_process_id_outside_range_is_one_line_error():
  proc = launch("launch.train", "--config=configs/default.py", "--workdir=/tmp/never_written",
                "--coordinator_address=127.0.0.1:1234", "--num_processes=2", "--process_id=2",
                timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  line = proc.stderr.strip().splitlines()[-1]
  assert line.startswith("error:") and "--process_id" in line and "[0, 2)" in line, line
  assert not os.path.exists("/tmp/never_written")


def test_flags_that_go_together():
  from experiments import distributed
  if distributed._cluster_detected():
    pytest.skip("inside a cluster JAX's detection fills in the missing flags")
  proc = launch("launch.train", "--config=configs/default.py", "--workdir=/tmp/never_written",
                "--num_processes=2", timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "--coordinator_address" in proc.stderr.strip().splitlines()[-1]


def test_coordinator_that_does_not_answer_is_named(tmp_path):
  """Process 1 of 2 with nobody at the address: an error naming it, within the timeout."""
  address = f"127.0.0.1:{local_cluster.free_port()}"
  t0 = time.monotonic()
  proc = launch("launch.train", "--config=configs/default.py", f"--workdir={tmp_path / 'w'}",
                f"--coordinator_address={address}", "--num_processes=2", "--process_id=1",
                "--initialization_timeout=3", timeout=120)
  elapsed = time.monotonic() - t0
  assert proc.returncode == 2, proc.stderr[-2000:]
  line = proc.stderr.strip().splitlines()[-1]
  assert line.startswith("error:") and address in line and "3 s" in line, line
  assert elapsed < 60
  assert not os.path.exists(tmp_path / "w")


# ----------------------------------------------------------------------------- slow

@pytest.mark.slow
def test_kill_9_of_one_process_ends_the_other_and_relaunch_resumes(two_process_run, tmp_path):
  workdir, codes, job = two_process_run
  assert codes == [0, 0], _job_failure(job, codes)
  run = tmp_path / "run"
  killed = _train_job(run, tmp_path / "logs1", heartbeat=10)
  _wait_for_checkpoint(run, EVERY, killed)
  killed.signal(1, signal.SIGKILL)
  t0 = time.monotonic()
  codes = killed.wait(timeout=120)
  assert codes[1] == -signal.SIGKILL
  assert codes[0] != 0 and time.monotonic() - t0 < 90, _job_failure(killed, codes)
  again = _train_job(run, tmp_path / "logs2")
  codes = again.wait(timeout=900)
  assert codes == [0, 0], _job_failure(again, codes)
  _assert_losses_close(_losses(str(run)), _losses(workdir), range(1, STEPS + 1))
  assert _checkpoint_steps(str(run))[-1] == STEPS


@pytest.mark.slow
def test_sigterm_to_one_process_saves_on_all_and_relaunch_resumes(two_process_run, tmp_path):
  workdir, codes, job = two_process_run
  assert codes == [0, 0], _job_failure(job, codes)
  run = tmp_path / "run"
  first = _train_job(run, tmp_path / "logs1")
  _wait_for_losses(run, 10, first)
  first.signal(1, signal.SIGTERM)
  codes = first.wait(timeout=300)
  assert codes == [75, 75], _job_failure(first, codes)
  saved = _checkpoint_steps(str(run))
  assert saved and saved[-1] < STEPS
  again = _train_job(run, tmp_path / "logs2")
  codes = again.wait(timeout=900)
  assert codes == [0, 0], _job_failure(again, codes)
  _assert_losses_close(_losses(str(run)), _losses(workdir), range(1, STEPS + 1))


@pytest.mark.slow
def test_sample_and_evaluate_in_two_processes_match_one(two_process_run, tmp_path):
  workdir, codes, job = two_process_run
  assert codes == [0, 0], _job_failure(job, codes)
  out2 = tmp_path / "two.npy"
  sampler = local_cluster.start(["-m", "launch.sample", f"--workdir={workdir}",
                                 "--num_samples=64", "--seed=5", f"--out={out2}"],
                                log_dir=str(tmp_path / "logs"), cwd=REPO)
  codes = sampler.wait(timeout=600)
  assert codes == [0, 0], _job_failure(sampler, codes)
  out1 = tmp_path / "one.npy"
  proc = launch("launch.sample", f"--workdir={workdir}", "--num_samples=64", "--seed=5",
                f"--out={out1}", env={"JAX_NUM_CPU_DEVICES": "8"})
  assert proc.returncode == 0, proc.stderr[-2000:]
  np.testing.assert_allclose(np.load(out2), np.load(out1), atol=1e-5)
  evaluator = local_cluster.start(["-m", "launch.evaluate", f"--workdir={workdir}",
                                   "--num_steps=10"], log_dir=str(tmp_path / "logs_eval"),
                                  cwd=REPO)
  codes = evaluator.wait(timeout=600)
  assert codes == [0, 0], _job_failure(evaluator, codes)
  assert any(n.startswith("eval_") and n.endswith("_10.json") for n in os.listdir(workdir))


@pytest.mark.slow
def test_global_batch_not_divisible_by_all_devices(tmp_path):
  job = _train_job(tmp_path / "run", tmp_path / "logs", "--config.train.batch_size=100",
                   devices=3)   # 6 devices in all
  codes = job.wait(timeout=300)
  assert codes == [2, 2], _job_failure(job, codes)
  line = job.log(0).strip().splitlines()[-1]
  assert line.startswith("error:") and "batch_size=100" in line and "(6)" in line, line


@pytest.mark.slow
def test_distributed_flag_detects_a_slurm_job(tmp_path):
  """--distributed alone under SLURM's variables (2 tasks on this host): JAX's SLURM
  detection finds the coordinator, the process count and ids; the job trains on 8 devices."""
  for job_id in range(os.getpid() % 4000, 4096):   # JAX's SLURM port: 61440 + job_id % 4096
    port = 61440 + job_id
    with socket.socket() as probe:
      if probe.connect_ex(("127.0.0.1", port)) != 0:   # nothing listens there
        break
  processes = []
  for i in range(2):
    env = {**local_cluster.process_env(4), "SLURM_JOB_ID": str(job_id),
           "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "2", "SLURM_PROCID": str(i),
           "SLURM_LOCALID": str(i), "SLURM_STEP_NUM_NODES": "1"}
    log = open(tmp_path / f"process_{i}.log", "w")
    processes.append(subprocess.Popen(
        [sys.executable, "-m", "launch.train", "--config=configs/default.py",
         f"--workdir={tmp_path / 'run'}", "--config.train.num_steps=20",
         "--config.train.checkpoint_every=10", "--config.log.progress=false",
         "--config.eval.num_samples=64", "--distributed"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO))
  job = local_cluster.LocalJob(processes, [str(tmp_path / f"process_{i}.log") for i in range(2)],
                               f"localhost:{port}")
  codes = job.wait(timeout=600)
  assert codes == [0, 0], _job_failure(job, codes)
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    start = next(r for r in map(json.loads, f) if r.get("event") == "start")
  assert start["num_devices"] == 8


@pytest.mark.slow
def test_host_data_two_processes_match_one_process(tmp_path):
  """tfds + grain data (mocked in every process by a sitecustomize): each process reads its
  half of every global batch; the losses equal the 1-process 8-device run's."""
  site = tmp_path / "site"
  site.mkdir()
  (site / "sitecustomize.py").write_text(
      "import tensorflow_datasets as tfds\n"
      "_mock = tfds.testing.mock_data(num_examples=64, "
      "policy=tfds.testing.MockPolicy.USE_CODE)\n"
      "_mock.__enter__()\n")
  env = {"PYTHONPATH": os.pathsep.join([str(site), REPO])}
  argv = ["-m", "launch.train", "--config=configs/cfm_cifar10.py:runlocal=true",
          "--config.train.num_steps=6", "--config.train.checkpoint_every=3",
          "--config.eval.num_samples=16"]
  losses = {}
  for name, processes, devices in (("two", 2, 4), ("one", 1, 8)):
    workdir = tmp_path / name
    job = local_cluster.start([*argv, f"--workdir={workdir}"], num_processes=processes,
                              devices_per_process=devices, log_dir=str(tmp_path / f"logs_{name}"),
                              cwd=REPO, env=env)
    codes = job.wait(timeout=900)
    assert codes == [0] * processes, _job_failure(job, codes)
    losses[name] = _losses(str(workdir))
    assert _checkpoint_steps(str(workdir)) == [3, 6]
  _assert_losses_close(losses["two"], losses["one"], range(1, 7))


def _wait_until(done, what, job, timeout=600):
  """Poll `done()` until it holds; fail (killing the job) if a process exits first or time runs out."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if done():
      return
    if any(p.poll() is not None for p in job.processes):
      break
    time.sleep(0.2)
  job.kill()
  raise AssertionError(f"{what} never happened\n" +
                       _job_failure(job, [p.poll() for p in job.processes]))


def _wait_for_losses(workdir, n, job):
  path = os.path.join(workdir, "metrics.jsonl")
  _wait_until(lambda: os.path.exists(path) and len(_losses(str(workdir))) >= n,
              f"{n} loss rows", job)


def _wait_for_checkpoint(workdir, step, job):
  path = os.path.join(workdir, "checkpoints", str(step))
  _wait_until(lambda: os.path.isdir(path), f"checkpoint {step}", job)
