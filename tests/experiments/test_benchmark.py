"""The benchmark launcher runs a quick throughput benchmark and writes its table as JSON."""

import json

from tests.experiments.helpers import launch


def test_throughput_benchmark_quick(tmp_path):
  proc = launch("launch.benchmark", "--config=configs/bench_throughput.py:quick=true",
                f"--out={tmp_path}", "--config.with_torch=false")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "jax steps/s" in proc.stdout
  result = json.loads((tmp_path / "throughput.json").read_text())
  (row,) = result["rows"]
  assert row["batch"] == 64 and row["jax steps/s"] > 0 and row["torch steps/s"] is None
  assert result["machine"]["platform"] == "cpu"
