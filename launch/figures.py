"""Paper figures: python -m launch.figures --list | NAME [NAME ...] | all [--quick] [--out=DIR].

Each NAME writes OUT/NAME.png and OUT/NAME.json (the plotted data); models it
needs are trained (or reused) under OUT/_work/NAME[_quick]. --quick trains tiny
models for few steps and uses fewer samples (for tests and previews).

OUT is --out when given; otherwise `figures` (the committed gallery), and
`workdirs/figures_quick` with --quick, so quick previews never replace the
gallery's images (experiments.figures.output_dir).

Evaluating an existing run instead of training the figure's own (cfg_sweep only):

  python -m launch.figures cfg_sweep --workdir=RUN [--scales=0,1,2,4] [--seeds=3]
      [--num_samples=1000] [--out=DIR]

sweeps the guidance scale of the class-conditional digits run RUN, prints the sweep
as a Markdown table and writes OUT/cfg_sweep.{png,json} (OUT defaults to RUN).
"""

from __future__ import annotations

import json
import time

from absl import flags

from launch import common

flags.DEFINE_bool("list", False, "Print the figure names with one-line descriptions and exit.")
flags.DEFINE_bool("quick", False, "Tiny models, few steps and samples (for tests and previews); "
                  "the default --out becomes workdirs/figures_quick.")
flags.DEFINE_string("out", None, "Output directory for NAME.png and NAME.json (default: figures; "
                    "workdirs/figures_quick with --quick; RUN with --workdir).")
flags.DEFINE_string("workdir", None, "cfg_sweep only: sweep this class-conditional digits run "
                    "instead of training the figure's own.")
flags.DEFINE_list("scales", ["0", "1", "2", "4"], "--workdir: the guidance scales w.")
flags.DEFINE_integer("seeds", 3, "--workdir: sampling seeds per scale.")
flags.DEFINE_integer("num_samples", 1000, "--workdir: samples per scale and seed.")
FLAGS = flags.FLAGS


def _sweep_workdir(requested: list[str]) -> None:
  from experiments import figures
  from experiments.figures import cfg_sweep
  if requested != ["cfg_sweep"] or FLAGS.quick:
    raise common.UserError("--workdir evaluates an existing run with the cfg_sweep figure only: "
                         "python -m launch.figures cfg_sweep --workdir=RUN (without --quick)")
  try:
    scales = [float(w) for w in FLAGS.scales]
  except ValueError as e:
    raise common.UserError(f"--scales must be comma-separated numbers, got {FLAGS.scales}") from e
  out = figures.output_dir(FLAGS.out, workdir=FLAGS.workdir)
  summary = cfg_sweep.run_workdir(FLAGS.workdir, out, scales=scales,
                                  num_samples=FLAGS.num_samples, seeds=FLAGS.seeds)
  print(summary.pop("table"))
  print(f"cfg_sweep: {json.dumps(summary, default=str)}")


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
    raise common.UserError(f"name a figure (or 'all'); valid names: {', '.join(figures.names())}")
  if requested == ["all"]:
    requested = list(figures.names())
  unknown = [n for n in requested if n not in figures.names()]
  if unknown:
    raise common.UserError(f"unknown figure name(s) {', '.join(unknown)}; valid names: "
                         f"{', '.join(figures.names())}")
  if FLAGS.workdir:
    _sweep_workdir(requested)
    return
  out = figures.output_dir(FLAGS.out, quick=FLAGS.quick)
  for name in requested:
    t0 = time.perf_counter()
    summary = figures.run(name, out, quick=FLAGS.quick)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    if "table" in summary:       # a sweep's Markdown table (ar_sampling)
      print(summary.pop("table"))
    print(f"{name}: {json.dumps(summary, default=str)}")


if __name__ == "__main__":
  common.run(main)
