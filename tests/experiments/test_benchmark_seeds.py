"""The seeds benchmark: one vmapped num_seeds run vs sequential runs, same metrics per seed."""

import json

import pytest

from configs import bench_seeds
from experiments.benchmarks import seeds
from tests.experiments.helpers import launch


def test_seeds_benchmark_in_process():
  config = bench_seeds.get_config("quick=true")
  config.steps, config.eval_samples = 10, 64
  result = seeds.run(config)
  vmapped, sequential = result["rows"]
  assert result["ratio"] == pytest.approx(sequential["wall s"] / vmapped["wall s"])
  assert result["per_seed"]["vmapped"] == pytest.approx(result["per_seed"]["sequential"], rel=1e-3)
  assert vmapped["w2 std"] > 0


@pytest.mark.slow
def test_seeds_benchmark_cli(tmp_path):
  proc = launch("launch.benchmark", "--config=configs/bench_seeds.py:quick=true",
                f"--out={tmp_path}", timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "sequential / vmapped wall time" in proc.stdout
  result = json.loads((tmp_path / "seeds.json").read_text())
  vmapped, sequential = result["rows"]
  assert vmapped["mode"].startswith("vmapped") and sequential["mode"].startswith("sequential")
  assert vmapped["wall s"] > 0 and sequential["wall s"] > 0
  assert result["ratio"] == pytest.approx(sequential["wall s"] / vmapped["wall s"])
  # replica i of the vmapped run is the run with seed i
  per_seed = result["per_seed"]
  assert len(per_seed["vmapped"]) == 2 and len(set(per_seed["vmapped"])) == 2
  assert per_seed["vmapped"] == pytest.approx(per_seed["sequential"], rel=1e-3)
  assert vmapped["w2 mean"] == pytest.approx(sequential["w2 mean"], rel=1e-3)


@pytest.mark.parametrize("field, value", [("num_seeds", 1), ("num_seeds", -3), ("steps", 1)])
def test_seeds_benchmark_refuses_bad_config(field, value):
  config = bench_seeds.get_config("quick=true")
  config[field] = value
  with pytest.raises(ValueError, match=f"config.{field}"):
    seeds.run(config)
