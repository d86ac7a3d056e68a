"""Benchmark: speculative decoding on a trained autoregressive workdir, its acceptance rate
and speed-up over the target alone, for transformer and count-model drafts.

Usage: python -m launch.benchmark --config=configs/bench_speculative.py[:target=WORKDIR,...]
Arguments: target (the target's workdir), drafts (';'-separated: workdirs of smaller
autoregressive models on the same data, bigram, unigram), ks ('-'-separated num_draft
values), temperatures ('-'-separated, each T or T/top_p; 0 is greedy and checks the
tokens against the target's greedy decode), batches ('-'-separated), new (max_new_tokens;
0: the family's, a data example), repeats (timed calls; the median is reported), seed,
quick (K = 2, greedy and T = 1, batches 1 and 4, 12 new tokens, 1 repeat: for tests).
"""

import ml_collections

from configs.common import parse_arg


def get_config(arg=None):
  a = parse_arg(arg, target="/work/runs/ar_digits_cond",
                drafts="/work/runs/ar_digits_cond_draft;bigram", ks="2-4-8",
                temperatures="0-1-0.8/0.9", batches="1-64", new=0, repeats=5, seed=0,
                quick=False)
  c = ml_collections.ConfigDict({
      "benchmark": "speculative",
      "name": "speculative",
      "target": a.target,
      "drafts": tuple(d for d in a.drafts.split(";") if d),
      "ks": tuple(int(k) for k in a.ks.split("-")),
      "temperatures": tuple(a.temperatures.split("-")),
      "batches": tuple(int(b) for b in a.batches.split("-")),
      "max_new_tokens": a.new,
      "repeats": a.repeats,
      "seed": a.seed,
  })
  if a.quick:
    c.name = "speculative_quick"
    c.ks = (2,)
    c.temperatures = ("0", "1")
    c.batches = (1, 4)
    c.max_new_tokens = a.new or 12
    c.repeats = 1
  return c
