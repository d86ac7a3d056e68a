"""The multi-process benchmark (experiments/benchmarks/multiprocess.py) at a tiny size:
1 process x 2 devices and 2 processes x 1 device train the same losses, and steps/s,
compile time and ratios are reported for both."""

import pytest

from configs import bench_multiprocess
from experiments.benchmarks import multiprocess as bench


def test_config_arguments():
  c = bench_multiprocess.get_config("topologies=1x8-2x4,steps=50")
  assert c.topologies == ((1, 8), (2, 4)) and c.num_steps == 50
  with pytest.raises(ValueError, match="unknown config argument"):
    bench_multiprocess.get_config("processes=2")


@pytest.mark.slow   # two launcher runs (about 2 min on 2 cores); the 2-process path runs by default in tests/launch/test_multiprocess.py
def test_quick_multiprocess_benchmark():
  result = bench.run(bench_multiprocess.get_config("quick=true"))
  assert result["columns"] == bench.COLUMNS
  rows = result["rows"]
  assert [r["topology"] for r in rows] == ["1x2", "2x1"]
  assert [r["devices"] for r in rows] == [2, 2]
  for row in rows:
    assert set(row) == set(bench.COLUMNS)
    assert row["steps/s"] > 0 and row["compile s"] > 0 and row["wall s"] > 0
    assert row["max |loss diff|"] <= 1e-5
  assert rows[0]["ratio to first"] == 1.0 and rows[1]["ratio to first"] > 0
