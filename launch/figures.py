"""Paper figures: python -m launch.figures --list | NAME [NAME ...] | all [--quick] [--out=figures].

Each NAME writes OUT/NAME.png and OUT/NAME.json (the plotted data); models it
needs are trained (or reused) under OUT/_work/NAME[_quick]. --quick trains tiny
models for few steps and uses fewer samples (seconds per figure on a CPU).
"""

from __future__ import annotations

import json
import time

from absl import app, flags

from launch import common

flags.DEFINE_bool("list", False, "Print the figure names with one-line descriptions and exit.")
flags.DEFINE_bool("quick", False, "Tiny models, few steps and samples (for tests and previews).")
flags.DEFINE_string("out", "figures", "Output directory for NAME.png and NAME.json.")
FLAGS = flags.FLAGS


def main(argv):
  from experiments import figures
  common.quiet_logging()
  requested = argv[1:]
  if FLAGS.list:
    width = max(map(len, figures.names()))
    for name in figures.names():
      print(f"{name:{width}s}  {figures.describe(name)}")
    return
  if not requested:
    raise app.UsageError(f"name a figure (or 'all'); valid names: {', '.join(figures.names())}")
  if requested == ["all"]:
    requested = list(figures.names())
  unknown = [n for n in requested if n not in figures.names()]
  if unknown:
    raise app.UsageError(f"unknown figure name(s) {', '.join(unknown)}; valid names: "
                         f"{', '.join(figures.names())}")
  for name in requested:
    t0 = time.perf_counter()
    summary = figures.run(name, FLAGS.out, quick=FLAGS.quick)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"{name}: {json.dumps(summary, default=str)}")


if __name__ == "__main__":
  app.run(main)
