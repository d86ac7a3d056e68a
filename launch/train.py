"""Train: python -m launch.train --config=configs/X.py[:arg] --workdir=DIR [--config.a.b=v ...].

Relaunching the same command resumes from DIR's latest checkpoint.
"""

import json
import os

from absl import flags
from ml_collections import config_flags

from launch import common

config_flags.DEFINE_config_file("config", None, "Python config file (configs/*.py[:arg]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host runs).")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  common.quiet_logging()
  import jax
  if FLAGS.distributed:
    jax.distributed.initialize()
  from experiments import configuration, trainer
  with common.user_errors():  # a bad config or workdir: one line, nothing written
    configuration.validate(FLAGS.config)
    if os.path.exists(FLAGS.workdir) and not os.path.isdir(FLAGS.workdir):
      raise common.UserError(f"--workdir={FLAGS.workdir} exists and is not a directory")
  summary = trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  if jax.process_index() == 0:
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  common.run(main)
