"""An autoregressive transformer on scikit-learn's 8x8 digits as 64 tokens of 17 grey levels
(ImageGPT-style raster order), unconditional or class-conditional (the label as the first token).

Usage: --config=configs/ar_digits.py:cond=true,steps=3000
Arguments: cond (class-conditional), dim, layers, heads, kv_heads (0 = heads; fewer:
grouped-query attention), positions (rope | learned), dropout (residual), weight_decay,
temperature / top_k / top_p (the ancestral decoder's defaults), steps, batch, lr,
runlocal (a few steps, for tests).

Same train / held-out split as every digits family (1500 / 297). Evaluation: held-out
bits/dim with its standard error beside the uniform (log2 17 = 4.09), per-pixel marginal
and (position, left, up)-neighbour count models, and FD / precision / recall / class
accuracy of 1000 samples. About 10 minutes on 2 CPU cores (docs/autoregressive.md).
"""

from configs.common import ar_model, ar_schedule, base_config, parse_arg, product, sweep_arg
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, cond=False, dim=64, layers=3, heads=4, kv_heads=0, positions="rope",
                dropout=0.25, temperature=1.0, top_k=0, top_p=1.0, steps=3000, batch=64,
                lr=2e-3, weight_decay=0.1, runlocal=False)
  c = base_config("autoregressive", "digits")
  c.model = ar_model(a, levels=17,                        # grey levels p / 16 -> token p
                     num_classes=10 if a.cond else 0)     # > 0: the label is the first token
  # (dropout and weight decay: without them 1500 images are memorised; docs/autoregressive.md)
  c.sample = ml_collections.ConfigDict({
      "sampler": "ancestral",
      "options": f"temperature={a.temperature},top_k={a.top_k},top_p={a.top_p}"})
  c.ar = ml_collections.ConfigDict({"eval_batch": 297})
  return ar_schedule(c, a, weight_decay=a.weight_decay)


def get_sweep(arg: str | None = None) -> list[dict]:
  """Model width x 2 seeds (one vmapped program per width). runlocal=true: 2 widths, 1 seed."""
  a = sweep_arg(arg, runlocal=False)
  if a.runlocal:
    return product(("model.dim", [16, 32]))
  return product(("model.dim", [64, 96, 128]), ("num_seeds", [2]))
