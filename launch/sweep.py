"""Sweeps: run every point of a config's get_sweep(arg), or collect the results.

  python -m launch.sweep --config=configs/X.py[:arg] --workdir=ROOT [--parallel=N]
      [--executor=local|submitit_local|slurm] [--dry_run]
      [--slurm_partition=P --slurm_time=MINUTES --slurm_gpus=G] [--timeout_min=M]
  python -m launch.sweep --collect ROOT [--metric=w2] [--x=optim.lr]

Point i trains into ROOT/<i>_<slug>/ (log in ROOT/<point>/log.txt; ROOT/sweep.json lists
the points). Relaunching skips finished points and resumes interrupted ones. Exits nonzero
if a point failed, naming it and its log. --collect writes ROOT/results.csv, results.md and
<metric>_vs_<x>.png.
"""

import signal
import sys

from absl import flags

from launch import common

flags.DEFINE_string("config", None, "Config file with get_sweep: configs/X.py[:arg].")
flags.DEFINE_string("workdir", None, "Sweep root: one subdirectory per point.")
flags.DEFINE_integer("parallel", 1, "Points at a time (0: all at once).")
flags.DEFINE_enum("executor", "local", ["local", "submitit_local", "slurm"],
                  "Plain local processes, submitit's LocalExecutor, or SLURM via submitit.")
flags.DEFINE_bool("dry_run", False, "List the points and their commands; run nothing.")
flags.DEFINE_string("slurm_partition", None, "SLURM partition (--executor=slurm).")
flags.DEFINE_integer("slurm_time", None, "SLURM time limit per point in minutes "
                     "(--executor=slurm; default --timeout_min).")
flags.DEFINE_integer("slurm_gpus", 0, "GPUs per point on SLURM.")
flags.DEFINE_integer("timeout_min", 24 * 60, "Time limit per point of submitit jobs, minutes.")
flags.DEFINE_string("collect", None, "Sweep root to gather results from (instead of running).")
flags.DEFINE_string("metric", "w2", "--collect: metric to plot.")
flags.DEFINE_string("x", None, "--collect: swept key on the plot's x axis "
                    "(default: the only swept key other than seed).")
FLAGS = flags.FLAGS


def _collect() -> int:
  from experiments import sweep_results
  out = sweep_results.collect(FLAGS.collect, metric=FLAGS.metric, x=FLAGS.x)
  print(f"{out['done']}/{out['points']} points finished")
  for kind in ("csv", "md", "png"):
    if kind in out:
      print(f"wrote {out[kind]}")
  with open(out["md"]) as f:
    print("\n" + f.read())
  return 0


def _dry_run(sweep, root) -> int:
  import os
  import shlex
  from experiments import sweep as sweep_lib
  print(f"{len(sweep.points)} points of {sweep.manifest()['config']} under {root}:")
  for point in sweep.points:
    state = sweep_lib.point_state(os.path.join(root, point.name))
    print(f"  [{state}] {point.name}  {point.overrides}")
    print(f"      {shlex.join(sweep_lib.train_command(sweep, point, root))}")
  return 0


def _run() -> int:
  from experiments import sweep as sweep_lib
  if not FLAGS.config or not FLAGS.workdir:
    raise common.UserError("--config and --workdir are required (or --collect ROOT)")
  sweep = sweep_lib.plan(FLAGS.config)  # every point checked before anything runs
  if FLAGS.dry_run:
    return _dry_run(sweep, FLAGS.workdir)
  timeout = FLAGS.timeout_min
  if FLAGS.executor == "slurm" and FLAGS.slurm_time:
    timeout = FLAGS.slurm_time
  outcomes = sweep_lib.run(sweep, FLAGS.workdir, executor=FLAGS.executor,
                           parallel=FLAGS.parallel, timeout_min=timeout,
                           slurm_partition=FLAGS.slurm_partition, slurm_gpus=FLAGS.slurm_gpus,
                           echo=lambda line: print(line, flush=True))
  counts = {}
  for o in outcomes:
    counts[o.status] = counts.get(o.status, 0) + 1
  print("summary: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
  bad = [o for o in outcomes if o.status in ("failed", "incomplete")]
  for o in bad:
    print(f"\n{o.status.upper()}: {o.point.name} (exit code {o.returncode}); log: {o.log}",
          file=sys.stderr)
    print(sweep_lib.tail(o.log), file=sys.stderr)
  if bad:
    print(f"{len(bad)} point(s) did not finish: {', '.join(o.point.name for o in bad)}. "
          "Rerun the same command to retry them (finished points are skipped).", file=sys.stderr)
    return 1
  return 0


def _terminate(signum, frame):
  del signum, frame
  raise KeyboardInterrupt


def main(argv):
  if len(argv) > 1:
    raise common.UserError(f"unexpected arguments: {argv[1:]}")
  common.quiet_logging()
  signal.signal(signal.SIGTERM, _terminate)  # stop the points cleanly: they checkpoint
  try:
    return _collect() if FLAGS.collect else _run()
  except ValueError as e:  # a bad sweep or collect request: nothing was started
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("interrupted: running points were stopped after a checkpoint; rerun to resume",
          file=sys.stderr)
    return 130


if __name__ == "__main__":
  common.run(main)
