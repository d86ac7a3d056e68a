"""A character-level autoregressive transformer on text: US census surnames (default), first
names, or tiny_shakespeare (tfds, read with tfds.data_source; needs the data prepared).

Usage: --config=configs/ar_text.py:data=us_surnames,steps=3000
Arguments: data (us_surnames | us_first_names | tiny_shakespeare), dim, layers, heads,
kv_heads (0 = heads), positions (rope | learned), dropout (residual), seq_len (tiny_shakespeare windows),
temperature / top_k / top_p (the ancestral decoder's defaults), prompt (the default prompt
of samples), steps, batch, lr, runlocal (a few steps, for tests).

Word lists are split 80/10/10 by word (a test word never occurs in training). Evaluation:
held-out nats per character (the end of a word counts as one) with its standard error
beside unigram and bigram count models, and for word lists the fractions of sampled
words that are novel and that are real held-out words. About 10 minutes on 2 CPU cores
(docs/autoregressive.md).
"""

from configs.common import ar_model, ar_schedule, base_config, parse_arg, product, sweep_arg
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, data="us_surnames", dim=96, layers=3, heads=4, kv_heads=0,
                positions="rope", dropout=0.1, seq_len=129, temperature=1.0, top_k=0, top_p=1.0,
                prompt="", steps=3000, batch=128, lr=2e-3, runlocal=False)
  c = base_config("autoregressive", a.data)
  if a.data == "tiny_shakespeare":
    c.data.seq_len = a.seq_len
  c.model = ar_model(a, num_classes=0)
  c.sample = ml_collections.ConfigDict({
      "sampler": "ancestral",
      "options": f"temperature={a.temperature},top_k={a.top_k},top_p={a.top_p}",
      "prompt": a.prompt,      # samples are data-length: prompt + generated = seq_len
  })
  c.ar = ml_collections.ConfigDict({"eval_batch": 1024})
  return ar_schedule(c, a, weight_decay=0.01)


def get_sweep(arg: str | None = None) -> list[dict]:
  """Depth x 2 seeds (one vmapped program per depth). runlocal=true: 2 depths, 1 seed."""
  a = sweep_arg(arg, runlocal=False)
  if a.runlocal:
    return product(("model.num_layers", [1, 2]))
  return product(("model.num_layers", [2, 4, 6]), ("num_seeds", [2]))
