"""The U-Net throughput benchmark's quick config runs and returns a well-formed table."""

import importlib.util

import pytest

from configs import bench_unet
from experiments.benchmarks import unet_throughput


def test_quick_unet_benchmark_rows_and_columns():
  config = bench_unet.get_config("quick=true,steps=2,warmup=0,sample_steps=2")
  assert config.benchmark == "unet_throughput" and config.image_sizes == (8,)
  config.channel_mult, config.attention_resolutions = (1,), ()   # one level: compiles fastest
  result = unet_throughput.run(config)
  assert result["columns"] == unet_throughput.COLUMNS
  (row,) = result["rows"]
  assert set(row) == set(result["columns"])
  assert row["image"] == "8x8x1" and row["batch"] == 8 and row["params"] > 10_000
  assert row["jax train img/s"] > 0 and row["jax sample img/s"] > 0 and row["jax compile s"] > 0
  if importlib.util.find_spec("torch") is None:
    assert row["torch params"] is None and row["train jax/torch"] is None
  else:   # the twin network: same parameter count, same function
    assert row["torch params"] == row["params"]
    assert row["out gap"] < 1e-4
    assert row["train jax/torch"] > 0 and row["sample jax/torch"] > 0
  assert any("GPU" in note for note in result["notes"])


@pytest.mark.parametrize("override, match", [
    ("batch=0", "config.batch"), ("sample_steps=0", "config.sample_steps"),
    ("sizes=10", "divisible"), ("channels=12", "num_groups"),
])
def test_bad_config_is_refused_before_compiling(override, match):
  with pytest.raises(ValueError, match=match):
    unet_throughput.run(bench_unet.get_config(override))
