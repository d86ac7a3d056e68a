"""Tests for experiments/workdir.py: the lock, atomic writes, config drift, the history."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from experiments import logs, workdir as wd


def test_lock_is_exclusive_and_names_the_holder(tmp_path):
  with wd.WorkdirLock(str(tmp_path)):
    assert wd.is_locked(str(tmp_path))
    assert wd.holder_pid(str(tmp_path)) == os.getpid()
    # Another process cannot take it (flock locks are per open file description).
    code = textwrap.dedent(f"""
        from experiments import workdir as wd
        try:
          wd.WorkdirLock({str(tmp_path)!r}).acquire()
        except wd.WorkdirLockedError as e:
          print(e)
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert f"pid {os.getpid()}" in out.stdout and str(tmp_path) in out.stdout
  assert not wd.is_locked(str(tmp_path))


def test_lock_dies_with_a_killed_process(tmp_path):
  code = (f"from experiments import workdir as wd; import time; "
          f"wd.WorkdirLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)")
  proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
  assert proc.stdout.readline().strip() == "held"
  assert wd.is_locked(str(tmp_path))
  proc.kill()  # SIGKILL: no clean-up code runs
  proc.wait()
  assert not wd.is_locked(str(tmp_path))
  with wd.WorkdirLock(str(tmp_path)):  # no stale lock
    pass


def test_check_usable(tmp_path):
  f = tmp_path / "file"
  f.write_text("x")
  with pytest.raises(wd.WorkdirError, match="not a directory"):
    wd.check_usable(str(f))
  assert os.path.isdir(wd.check_usable(str(tmp_path / "new" / "dir")))


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
  path = tmp_path / "eval.json"
  wd.atomic_write_json(str(path), {"a": 1})
  wd.atomic_write_json(str(path), {"b": [1, 2]})
  assert json.loads(path.read_text()) == {"b": [1, 2]}
  assert os.listdir(tmp_path) == ["eval.json"]
  with pytest.raises(TypeError):  # not serialisable: the old file survives, no temporary left
    wd.atomic_write_json(str(path), {"c": object()})
  assert json.loads(path.read_text()) == {"b": [1, 2]}
  assert os.listdir(tmp_path) == ["eval.json"]


def test_config_drift_splits_allowed_and_refused_fields():
  old = {"seed": 0, "data": {"name": "moons"}, "train": {"num_steps": 10, "batch_size": 8},
         "model": {"hidden": [32, 32]}, "eval": {"num_samples": 100}}
  new = {"seed": 0, "data": {"name": "ring8"}, "train": {"num_steps": 20, "batch_size": 8},
         "model": {"hidden": (64,)}, "eval": {"num_samples": 50}}
  allowed, refused = wd.config_drift(old, new)
  assert allowed == {"train.num_steps": [10, 20], "eval.num_samples": [100, 50]}
  assert refused == {"data.name": ["moons", "ring8"], "model.hidden": [[32, 32], [64]]}
  assert wd.config_drift(old, old) == ({}, {})
  _, refused = wd.config_drift(old, {**old, "extra": 1})
  assert refused == {"extra": [None, 1]}


def test_check_config_drift_refuses_with_every_field_and_writes_nothing(tmp_path):
  stored = {"seed": 0, "data": {"name": "moons"}, "train": {"num_steps": 10}}
  (tmp_path / "config.json").write_text(json.dumps(stored))
  before = sorted(os.listdir(tmp_path))
  with pytest.raises(wd.ConfigDriftError) as info:
    wd.check_config_drift(str(tmp_path), {**stored, "seed": 1, "data": {"name": "ring8"}})
  message = str(info.value)
  assert "config.seed: 0 -> 1" in message and 'config.data.name: "moons" -> "ring8"' in message
  assert "--reset" in message
  assert sorted(os.listdir(tmp_path)) == before
  assert wd.check_config_drift(str(tmp_path), {**stored, "train": {"num_steps": 30}}) == {
      "train.num_steps": [10, 30]}
  assert wd.check_config_drift(str(tmp_path / "fresh"), stored) == {}


def test_history_is_append_only(tmp_path):
  wd.record_history(str(tmp_path), "start", {}, step=0)
  wd.record_history(str(tmp_path), "resume", {"train.num_steps": [10, 20]}, step=10)
  rows = [json.loads(l) for l in (tmp_path / wd.HISTORY_FILE).read_text().splitlines()]
  assert [r["event"] for r in rows] == ["start", "resume"]
  assert rows[1]["changed"] == {"train.num_steps": [10, 20]} and rows[1]["step"] == 10


def test_metrics_resume_drops_rows_after_the_checkpoint_and_a_torn_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in (5, 10, 15, 20)]
  path.write_text("\n".join(lines) + '\n{"step": 25, "lo')
  writer = logs.MetricWriter(str(tmp_path))
  assert writer.resume(10) == 3
  assert [r["step"] for r in logs.read_metrics(str(tmp_path))] == [5, 10]
  writer.write(15, {"loss": 0.5})
  assert [r["step"] for r in logs.read_metrics(str(tmp_path))] == [5, 10, 15]
  assert writer.resume(15) == 0
