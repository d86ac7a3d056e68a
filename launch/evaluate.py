"""Evaluate: python -m launch.evaluate --workdir=DIR [--sampler=NAME --num_steps=K
--options=key=value,... --guidance_scale=W --labels=L[,L...] --clip_x0=... --num_samples=N].

Re-evaluates the latest checkpoint's EMA params of a training workdir with any
sampler and options (the config's by default), exactly as the end of training does
(sample quality against fresh data with its noise floor, the family's own metrics),
and writes DIR/eval_<sampler>_<num_steps>.json (`eval_<sampler>.json` for an adaptive
solver, `eval_default.json` for a family without samplers). The training files
(eval.json, metrics.jsonl, checkpoints) are not touched. A user error prints one
line `error: ...` and exits with status 2.
Several processes (--coordinator_address / --num_processes / --process_id or
--distributed, docs/scaling.md): every process restores and samples the same, process 0
writes.
"""

import json

from absl import flags

from launch import common

flags.DEFINE_string("workdir", None, "A training workdir (holds config.json and checkpoints/).")
flags.DEFINE_integer("num_samples", None, "Number of samples (default: config.eval.num_samples).")
common.define_request_flags()
common.define_distributed_flags()
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  common.quiet_logging()
  common.initialize_distributed()   # multi-process jobs: every process samples, process 0 writes
  from experiments import distributed, sampling
  with common.user_errors():
    if FLAGS.num_samples is not None and FLAGS.num_samples < 1:
      raise common.UserError(f"--num_samples must be >= 1, got {FLAGS.num_samples}")
    job = sampling.prepare(FLAGS.workdir, None)
    n = FLAGS.num_samples or int(job.run.config.eval.num_samples)
    job = sampling.prepare(FLAGS.workdir, common.request_from_flags(n), run=job.run)
  summary = sampling.evaluate_to_file(job, num_samples=FLAGS.num_samples)
  if distributed.is_primary():   # one summary per job
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
  common.run(main)
