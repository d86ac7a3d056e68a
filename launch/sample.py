"""Sample: python -m launch.sample --workdir=DIR --out=FILE.npy [--num_samples=N --seed=S
--sampler=NAME --num_steps=K --options=key=value,... --guidance_scale=W --labels=L[,L...]
--clip_x0=none|static|dynamic --prompt=TEXT --replica=I].

Restores the latest checkpoint's EMA params and writes the samples to FILE.npy; prints
a JSON summary (the path written, shape, step, NFE, seconds). Autoregressive models take
their decoder (--sampler=ancestral|beam) and its controls as options
(--options=temperature=0.8,top_p=0.9), a text model also --prompt; text samples are
written as FILE.txt too, one per line. Every flag is checked,
and the request against the family and the sampler registry, before anything
compiles: a user error prints one line `error: ...` and exits with status 2.
Several processes (--coordinator_address / --num_processes / --process_id or
--distributed, docs/scaling.md): every process restores and samples the same, process 0
writes.
"""

import json

from absl import flags

from launch import common

flags.DEFINE_string("workdir", None, "A training workdir (holds config.json and checkpoints/).")
flags.DEFINE_integer("num_samples", 1000, "Number of samples (>= 1).")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_string("out", None, "Output .npy file.")
flags.DEFINE_integer("replica", 0, "Which replica of a num_seeds run to sample.")
common.define_request_flags()
common.define_distributed_flags()
flags.mark_flags_as_required(["workdir", "out"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  common.quiet_logging()
  common.initialize_distributed()   # multi-process jobs: every process samples, process 0 writes
  from experiments import distributed, sampling
  with common.user_errors():
    if FLAGS.num_samples < 1:
      raise common.UserError(f"--num_samples must be >= 1, got {FLAGS.num_samples}")
    request = common.request_from_flags(FLAGS.num_samples)
    job = sampling.prepare(FLAGS.workdir, request, replica=FLAGS.replica)
  info = sampling.sample_to_file(job, FLAGS.out, num_samples=FLAGS.num_samples, seed=FLAGS.seed)
  if distributed.is_primary():   # one summary per job
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
  common.run(main)
