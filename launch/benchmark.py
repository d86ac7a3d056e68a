"""Benchmarks: python -m launch.benchmark --config=configs/bench_X.py[:arg] [--out=DIR].

Prints a table and writes DIR/<name>.json (default DIR: benchmarks/results).
"""

import importlib

from absl import flags

from launch import common
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Benchmark config (configs/bench_*.py).",
                                lock_config=True)
flags.DEFINE_string("out", "benchmarks/results", "Directory for the JSON result.")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  common.quiet_logging()
  from experiments.benchmarks import report
  config = FLAGS.config
  module = importlib.import_module(f"experiments.benchmarks.{config.benchmark}")
  result = module.run(config)
  result["machine"] = report.machine()
  print(f"\n{result['title']}\n")
  print(report.table(result["columns"], result["rows"]))
  for line in result.get("notes", []):
    print(line)
  print(f"\nwrote {report.write(result, FLAGS.out, config.name)}")


if __name__ == "__main__":
  common.run(main)
