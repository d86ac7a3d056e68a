"""Train the digits classifier behind the image metrics.

  python -m launch.train_classifier --out=assets/digits_classifier [--seed=0 --steps=4000]

Writes <out>.npz (parameters) and <out>.json (settings and test accuracy).
"""

from __future__ import annotations

import json

from absl import flags

from launch import common

flags.DEFINE_string("out", "assets/digits_classifier", "Output path without suffix.")
flags.DEFINE_integer("seed", 0, "Random seed (initialisation and batches).")
flags.DEFINE_integer("steps", 4000, "Training steps.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_float("learning_rate", 2e-3, "Peak Adam-W learning rate (cosine decay to 0).")
flags.DEFINE_float("label_smoothing", 0.1, "Label smoothing of the cross-entropy targets.")
flags.DEFINE_integer("feature_dim", 64, "Width of the penultimate (metric) layer.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  common.quiet_logging()
  from experiments import classifier
  meta = classifier.train_digits_classifier(
      seed=FLAGS.seed, steps=FLAGS.steps, out_path=FLAGS.out, batch_size=FLAGS.batch_size,
      learning_rate=FLAGS.learning_rate,
      label_smoothing=FLAGS.label_smoothing, feature_dim=FLAGS.feature_dim)
  print(json.dumps(meta, indent=2, sort_keys=True))


if __name__ == "__main__":
  common.run(main)
