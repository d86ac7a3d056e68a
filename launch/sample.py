"""Sample: python -m launch.sample --workdir=DIR --num_samples=N --seed=S --out=FILE.npy
[--sampler=NAME --num_steps=K --replica=I]. Restores the latest checkpoint's EMA params."""

import json

from absl import app, flags

from launch import common

flags.DEFINE_string("workdir", None, "A training workdir (holds config.json and checkpoints/).")
flags.DEFINE_integer("num_samples", 1000, "Number of samples.")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_string("out", None, "Output .npy file.")
flags.DEFINE_string("sampler", None, "Sampler name (default: the config's).")
flags.DEFINE_integer("num_steps", None, "Number of sampler steps (default: the config's).")
flags.DEFINE_integer("replica", 0, "Which replica of a num_seeds run to sample.")
flags.mark_flags_as_required(["workdir", "out"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  common.quiet_logging()
  from experiments import sampling
  info = sampling.sample_to_file(FLAGS.workdir, FLAGS.out, num_samples=FLAGS.num_samples,
                                 seed=FLAGS.seed, sampler=FLAGS.sampler, num_steps=FLAGS.num_steps,
                                 replica=FLAGS.replica)
  print(json.dumps(info, indent=2))


if __name__ == "__main__":
  app.run(main)
