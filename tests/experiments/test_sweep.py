"""Sweeps: axis algebra, point checks, local / submitit runs, skip and resume, --collect."""

import csv
import json
import os
import shutil

import ml_collections
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from configs.common import product, sweep_arg, zip_
from experiments import sweep, sweep_results
from tests.experiments.helpers import REPO, launch

TEST_CONFIG = os.path.join(REPO, "tests", "experiments", "sweep_config.py")
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


# ----------------------------------------------------------------------------- axis algebra

def test_product_varies_the_last_axis_fastest():
  points = product(("optim.lr", [1e-3, 3e-3]), ("seed", [0, 1, 2]))
  assert points == [{"optim.lr": lr, "seed": s} for lr in (1e-3, 3e-3) for s in (0, 1, 2)]


def test_zip_walks_axes_together_and_composes_with_product():
  losses = zip_(("gan.loss", ["ns", "wgan_gp"]), ("gan.n_critic", [1, 5]))
  assert losses == [{"gan.loss": "ns", "gan.n_critic": 1}, {"gan.loss": "wgan_gp", "gan.n_critic": 5}]
  points = product(losses, {"data.name": ["ring8", "grid25"]})
  assert len(points) == 4
  assert points[1] == {"gan.loss": "ns", "gan.n_critic": 1, "data.name": "grid25"}
  assert points[2] == {"gan.loss": "wgan_gp", "gan.n_critic": 5, "data.name": "ring8"}
  # a dict axis is one axis per item
  assert zip_({"a": [1, 2], "b": [3, 4]}) == [{"a": 1, "b": 3}, {"a": 2, "b": 4}]
  assert len(product({"a": [1, 2], "b": [3, 4, 5]})) == 6


def test_axis_errors():
  with pytest.raises(ValueError, match="equal lengths"):
    zip_(("a", [1, 2]), ("b", [1, 2, 3]))
  with pytest.raises(ValueError, match="'a' appears in more than one axis"):
    product(("a", [1, 2]), ("a", [3]))
  with pytest.raises(ValueError, match="axis 'a' has no values"):
    product(("a", []))
  with pytest.raises(ValueError, match="needs a list of values"):
    product(("a", "abc"))
  with pytest.raises(ValueError, match="an axis must be"):
    product(["not a dict"])


def test_sweep_arg_reads_its_keys_and_skips_get_configs():
  a = sweep_arg("dataset=ring8,runlocal=true,steps=5", runlocal=False)
  assert a.runlocal is True and "dataset" not in a
  assert sweep_arg(None, runlocal=False).runlocal is False
  with pytest.raises(ValueError, match="runlocal must be true/false"):
    sweep_arg("runlocal=maybe", runlocal=False)


# ----------------------------------------------------------------------------- planning

def _write_config(tmp_path, points: str) -> str:
  path = tmp_path / "cfg.py"
  path.write_text(
      "from configs import cfm_toy\n"
      "def get_config(arg=None):\n  return cfm_toy.get_config('runlocal=true')\n"
      f"def get_sweep(arg=None):\n  return {points}\n")
  return str(path)


def test_every_point_is_checked_before_anything_runs(tmp_path):
  bad = _write_config(tmp_path, "[{'optim.lr': 1e-3}, {'optim.lr': 2e-3}, {'optim.lrr': 1e-3}]")
  with pytest.raises(ValueError, match=r"point 2: .*'optim.lrr' is not in the config"):
    sweep.plan(bad)
  root = tmp_path / "root"
  proc = launch("launch.sweep", f"--config={bad}", f"--workdir={root}", timeout=60)
  assert proc.returncode == 2 and "optim.lrr" in proc.stderr
  assert not root.exists()  # nothing was written or started


@pytest.mark.parametrize("points, match", [
    ("[{'optim': 1.0}]", "names a config section"),
    ("[{'optim.lr': 'fast'}]", r"optim.lr='fast': the field is of type float"),
    ("[{'train.num_steps': 2.5}]", "the field is of type int"),
    ("[{'train.num_steps': True}]", "the field is of type int"),
    ("[{'model.hidden': 64}]", "the field is of type tuple"),
    ("[{'seed': 1}, {'seed': 1}]", "repeats an earlier point"),
    ("[]", "non-empty list of override dicts"),
])
def test_bad_points_are_refused(tmp_path, points, match):
  with pytest.raises(ValueError, match=match):
    sweep.plan(_write_config(tmp_path, points))


def test_config_without_get_sweep_is_refused():
  with pytest.raises(ValueError, match="defines no get_sweep"):
    sweep.plan(os.path.join(REPO, "configs", "vae_toy.py"))
  with pytest.raises(ValueError, match="does not exist"):
    sweep.plan("configs/nope.py")


@pytest.mark.parametrize("name", ["cfm_toy", "ddpm_toy", "vae_digits", "gan_toy"])
@pytest.mark.parametrize("arg", ["", ":runlocal=true"])
def test_shipped_sweeps_are_valid(name, arg):
  s = sweep.plan(os.path.join(REPO, "configs", f"{name}.py") + arg)
  assert len(s.points) >= 2
  names = [p.name for p in s.points]
  assert len(set(names)) == len(names)
  assert all(n.startswith(f"{i:02d}_") for i, n in enumerate(names))
  assert names == [p.name for p in sweep.plan(os.path.join(REPO, "configs", f"{name}.py") + arg).points]


def test_override_flags_parse_back_through_config_flags():
  """--config.<key>=<value> as written by the sweep round-trips through ml_collections."""
  base = ml_collections.ConfigDict({"f": 1.0, "i": 2, "b": True, "s": "moons", "t": (32, 32),
                                    "o": {"lr": 1e-3, "name": "adam"}})
  overrides = {"f": 3e-5, "i": 7, "b": False, "s": "ring 8", "t": [64, 64, 64], "o.lr": 2,
               "o.name": "sgd"}
  args = ["prog", *sweep.override_flags(overrides)]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_dict("config", base, flag_values=fv, sys_argv=args)
  fv(args)
  c = fv.config
  assert (c.f, c.i, c.b, c.s, c.t, c.o.lr, c.o.name) == (3e-5, 7, False, "ring 8", (64, 64, 64),
                                                         2.0, "sgd")
  assert isinstance(c.o.lr, float)


def test_dry_run_lists_the_points_and_writes_nothing(tmp_path):
  root = tmp_path / "root"
  proc = launch("launch.sweep", f"--config={TEST_CONFIG}:points=3", f"--workdir={root}",
                "--dry_run", timeout=60)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "3 points" in proc.stdout
  for name in ("00_optim.lr=0.001", "01_optim.lr=0.003", "02_optim.lr=0.01"):
    assert f"[new] {name}" in proc.stdout
  assert "--config.optim.lr=0.01" in proc.stdout and "launch.train" in proc.stdout
  assert not root.exists()


def test_run_refuses_bad_arguments(tmp_path):
  s = sweep.plan(f"{TEST_CONFIG}:points=1")
  with pytest.raises(ValueError, match="parallel"):
    sweep.run(s, str(tmp_path), parallel=-1)
  with pytest.raises(ValueError, match="executor"):
    sweep.run(s, str(tmp_path), executor="mpi")
  with pytest.raises(ValueError, match="slurm_partition"):
    sweep.run(s, str(tmp_path), executor="slurm")
  with pytest.raises(ValueError, match="timeout_min"):
    sweep.run(s, str(tmp_path), executor="submitit_local", timeout_min=0)
  sweep.write_manifest(s, str(tmp_path))
  with pytest.raises(ValueError, match="different sweep"):
    sweep.run(sweep.plan(f"{TEST_CONFIG}:points=2"), str(tmp_path))


# ----------------------------------------------------------------------------- running

def _launches(log_path) -> int:
  with open(log_path) as f:
    return sum(line.startswith("[sweep]") and " launch " in line for line in f)


def test_local_sweep_runs_skips_and_resumes(tmp_path):
  root = str(tmp_path / "root")
  s = sweep.plan(f"{TEST_CONFIG}:points=2")
  lines = []
  first = sweep.run(s, root, parallel=2, env=ENV, echo=lines.append)
  assert [o.status for o in first] == ["done", "done"], [sweep.tail(o.log) for o in first]
  assert [o.started_from for o in first] == ["new", "new"]
  names = sorted(p for p in os.listdir(root) if not p.startswith("."))
  assert names == ["00_optim.lr=0.001", "01_optim.lr=0.003", "sweep.json"]
  manifest = json.load(open(os.path.join(root, "sweep.json")))
  assert manifest["points"][1]["overrides"] == {"optim.lr": 3e-3}
  for name in names[:2]:
    summary = json.load(open(os.path.join(root, name, "eval.json")))
    assert summary["status"] == "done" and summary["step"] == 20
    config = json.load(open(os.path.join(root, name, "config.json")))
    assert config["optim"]["lr"] == float(name.split("=")[1])  # the override reached the run
    assert config["log"]["progress"] is False

  # rerun: both finished points are skipped, nothing is launched again
  done_mtime = os.path.getmtime(os.path.join(root, names[0], "eval.json"))
  again = sweep.run(s, root, parallel=2, env=ENV)
  assert [o.status for o in again] == ["skipped", "skipped"]
  assert os.path.getmtime(os.path.join(root, names[0], "eval.json")) == done_mtime
  assert _launches(os.path.join(root, names[0], "log.txt")) == 1

  # interrupted point (a checkpoint at step 10, no eval.json): resumed, not restarted
  point1 = os.path.join(root, names[1])
  os.remove(os.path.join(point1, "eval.json"))
  shutil.rmtree(os.path.join(point1, "checkpoints", "20"))
  assert sweep.point_state(point1) == "partial"
  third = sweep.run(s, root, parallel=2, env=ENV)
  assert [(o.status, o.started_from) for o in third] == [("skipped", "done"), ("done", "partial")]
  events = [json.loads(line) for line in open(os.path.join(point1, "metrics.jsonl"))]
  starts = [(e["event"], e["step"]) for e in events if e.get("event") in ("start", "resume")]
  assert starts == [("start", 0), ("resume", 10)]
  assert _launches(os.path.join(point1, "log.txt")) == 2

  # and the real results collect
  out = sweep_results.collect(root, metric="w2")
  table = open(out["md"]).read()
  for name in names[:2]:
    w2 = json.load(open(os.path.join(root, name, "eval.json")))["w2"]
    assert f"{w2:.4g}" in table
  assert os.path.getsize(out["png"]) > 1000


def test_failing_point_makes_the_sweep_fail_and_names_its_log(tmp_path):
  root = tmp_path / "root"
  proc = launch("launch.sweep", f"--config={TEST_CONFIG}:points=0,fail=true", f"--workdir={root}",
                timeout=120)
  assert proc.returncode == 1, proc.stdout + proc.stderr
  log = root / "00_optim.lr=-1.0" / "log.txt"
  assert f"FAILED: 00_optim.lr=-1.0 (exit code 2); log: {log}" in proc.stderr
  assert "config.optim.lr must be a positive number" in log.read_text()


def test_submitit_local_executor_runs_a_point(tmp_path):
  pytest.importorskip("submitit")
  root = str(tmp_path / "root")
  s = sweep.plan(f"{TEST_CONFIG}:points=1")
  (outcome,) = sweep.run(s, root, executor="submitit_local", timeout_min=5, env=ENV)
  assert outcome.status == "done", sweep.tail(outcome.log, 40)
  assert os.path.isdir(os.path.join(root, ".submitit"))
  summary = json.load(open(os.path.join(root, s.points[0].name, "eval.json")))
  assert summary["status"] == "done" and summary["step"] == 20


# ----------------------------------------------------------------------------- collect

def _fake_root(tmp_path, points, summaries):
  """A sweep root with the given overrides and eval.json contents (None: not run)."""
  root = tmp_path / "fake"
  root.mkdir()
  named = [{"index": i, "name": f"{i:02d}_p", "overrides": o} for i, o in enumerate(points)]
  manifest = {"config": "x.py", "config_file": "x.py", "arg": None,
              "varying": sweep.varying_keys(points), "points": named}
  (root / "sweep.json").write_text(json.dumps(manifest))
  for p, s in zip(named, summaries):
    if s is not None:
      (root / p["name"]).mkdir()
      (root / p["name"] / "eval.json").write_text(json.dumps({"status": "done", **s}))
  return str(root)


def _md_rows(path):
  lines = [l for l in open(path) if l.startswith("| ")]
  header = [c.strip() for c in lines[0].strip().strip("|").split("|")]
  return [dict(zip(header, (c.strip() for c in l.strip().strip("|").split("|")))) for l in lines[1:]]


def test_collect_groups_over_seeds_with_mean_and_std(tmp_path):
  rng = np.random.default_rng(0)
  points = product(("optim.lr", [1e-3, 1e-2, 1e-1]), ("seed", [0, 1, 2]))
  w2 = rng.uniform(0.1, 1.0, size=len(points))
  summaries = [{"w2": float(v), "mmd": float(v) / 10, "num_seeds": 1} for v in w2]
  summaries[-1] = None  # lr=0.1, seed=2 never ran
  root = _fake_root(tmp_path, points, summaries)
  out = sweep_results.collect(root)  # x defaults to the only non-seed swept key
  assert out["done"] == 8 and out["points"] == 9
  rows = _md_rows(out["md"])
  assert [r["optim.lr"] for r in rows] == ["0.001", "0.01", "0.1"]
  for g, row in enumerate(rows):
    values = [v for v in w2[3 * g: 3 * g + 3]][: 3 if g < 2 else 2]
    assert row["w2"] == f"{np.mean(values):.4g} ± {np.std(values):.2g}"
    assert row["n"] == str(len(values))
  assert rows[2]["done"] == "2/3"
  with open(out["csv"]) as f:
    table = list(csv.DictReader(f))
  assert len(table) == 9 and table[-1]["status"] == "missing"
  assert float(table[4]["w2"]) == pytest.approx(w2[4]) and table[4]["seed"] == "1"
  assert out["png"].endswith("w2_vs_optim.lr.png")
  with open(out["png"], "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_collect_reports_num_seeds_replicas_as_mean_and_std(tmp_path):
  per_seed = {"a": [0.3, 0.5, 0.4], "b": [1.0, 2.0, 4.0]}
  summaries = [{"w2": float(np.mean(v)), "w2_std": float(np.std(v)), "num_seeds": 3,
                "per_seed": {"w2": v}} for v in per_seed.values()]
  root = _fake_root(tmp_path, [{"data.name": "a"}, {"data.name": "b"}], summaries)
  out = sweep_results.collect(root, metric="w2", x="data.name")
  rows = _md_rows(out["md"])
  for row, v in zip(rows, per_seed.values()):
    assert row["w2"] == f"{np.mean(v):.4g} ± {np.std(v):.2g}" and row["n"] == "3"
  with open(out["csv"]) as f:
    table = list(csv.DictReader(f))
  assert float(table[1]["w2_std"]) == pytest.approx(np.std(per_seed["b"]))


def test_collect_pools_replicas_across_the_seed_axis(tmp_path):
  points = product(("seed", [0, 10]))
  summaries = [{"w2": 0.2, "num_seeds": 2, "per_seed": {"w2": [0.1, 0.3]}},
               {"w2": 0.6, "num_seeds": 2, "per_seed": {"w2": [0.5, 0.7]}}]
  out = sweep_results.collect(_fake_root(tmp_path, points, summaries))
  (row,) = _md_rows(out["md"])
  assert row["w2"] == f"{np.mean([0.1, 0.3, 0.5, 0.7]):.4g} ± {np.std([0.1, 0.3, 0.5, 0.7]):.2g}"
  assert "png" not in out  # only seeds vary: nothing to plot against


def test_collect_refuses_bad_requests(tmp_path):
  points = product(("optim.lr", [1e-3, 1e-2]), ("model.width", [8, 16]))
  root = _fake_root(tmp_path, points, [{"w2": 1.0}] * 4)
  with pytest.raises(ValueError, match="metric 'fid' is in no eval.json"):
    sweep_results.collect(root, metric="fid")
  with pytest.raises(ValueError, match="x is required"):
    sweep_results.collect(root)
  with pytest.raises(ValueError, match="x='seed' is not a swept key"):
    sweep_results.collect(root, x="seed")
  assert "png" in sweep_results.collect(root, x="model.width")
  with pytest.raises(ValueError, match="has no sweep.json"):
    sweep_results.collect(str(tmp_path))


def test_collect_cli(tmp_path):
  root = _fake_root(tmp_path, product(("optim.lr", [1e-3, 1e-2])), [{"w2": 0.5}, {"w2": 0.25}])
  proc = launch("launch.sweep", "--collect", root, "--metric=w2", timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "2/2 points finished" in proc.stdout and "| 0.01 | 1 | 1/1 | 0.25 |" in proc.stdout
  for name in ("results.csv", "results.md", "w2_vs_optim.lr.png"):
    assert os.path.exists(os.path.join(root, name))
