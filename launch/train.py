"""Train: python -m launch.train --config=configs/X.py[:arg] --workdir=DIR [--config.a.b=v ...] [--reset].

Relaunching the same command resumes from DIR's latest checkpoint. The process holds
DIR's lock while it runs (a second launch on DIR exits at once, naming the holder's
pid); a relaunch with a config that differs in anything but the run length, logging,
evaluation, sampling, checkpoint cadence or device layout is refused before anything is written
(--reset deletes the run's files and starts over). User errors print one line
`error: ...` and exit with status 2. SIGTERM or SIGINT (Ctrl-C) saves a checkpoint
and exits with status 75 (EX_TEMPFAIL: "preempted, relaunch to resume"), so a
scheduler can tell it from success (0) and from failure (1).

Multi-process jobs (docs/scaling.md): start one process per host (or per GPU) with
--coordinator_address=HOST:PORT --num_processes=N --process_id=I, or --distributed for
JAX's cluster detection (SLURM, Cloud TPU). Process 0 holds the lock and writes logs,
metrics and figures; every process writes its part of each checkpoint; a SIGTERM to any
process makes all of them save the same step and exit with status 75.
"""

import json
import sys

from absl import flags
from ml_collections import config_flags

from launch import common

config_flags.DEFINE_config_file("config", None, "Python config file (configs/*.py[:arg]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots.")
flags.DEFINE_bool("reset", False, "Delete the workdir's run files first and start over.")
common.define_distributed_flags()
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  common.quiet_logging()
  common.initialize_distributed()   # multi-process jobs: before anything touches JAX
  import jax
  from experiments import checkpoint, configuration, trainer
  from experiments import workdir as workdir_lib
  with common.user_errors():  # a bad config or workdir: one line, nothing written
    configuration.validate(FLAGS.config)
    workdir_lib.check_usable(FLAGS.workdir)
  try:
    summary = trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir, reset=FLAGS.reset)
  except (workdir_lib.WorkdirError, checkpoint.NoGoodCheckpointError) as e:
    raise common.UserError(str(e)) from e
  if jax.process_index() == 0:
    print(json.dumps(summary, indent=2))
  if summary.get("status") == "preempted":
    sys.exit(trainer.PREEMPTED_EXIT_STATUS)


if __name__ == "__main__":
  common.run(main)
