"""Benchmark: greedy decode tokens/s of the autoregressive transformer, KV cache vs
recomputing the prefix, compile time vs max_new_tokens, and HF GPT-2 as a peer.

Usage: python -m launch.benchmark --config=configs/bench_decode.py[:quick=true,batches=1-64,...]
Arguments: batches ('-'-separated), prompt (prompt tokens), new (max_new_tokens),
compile_lengths ('-'-separated max_new_tokens for the compile-time rows), repeats
(timed calls; the median is reported), layers, heads, dim, vocab, hf (run the Hugging
Face peer when torch and transformers are installed), quick (a tiny setting for tests).
"""

import ml_collections

from configs.common import parse_arg


def get_config(arg=None):
  a = parse_arg(arg, batches="1-64", prompt=8, new=128, compile_lengths="32-128-512",
                repeats=3, layers=2, heads=4, dim=64, vocab=256, hf=True, quick=False)
  c = ml_collections.ConfigDict({
      "benchmark": "decode",
      "name": "decode",
      "seed": 0,
      # GPT-2 style: learned positions, LayerNorm, tied embeddings, tanh GELU.
      "model": {"vocab_size": a.vocab, "max_len": 1024, "dim": a.dim,
                "num_layers": a.layers, "num_heads": a.heads, "mlp_ratio": 4.0,
                "norm_eps": 1e-5},
      "embed_std": 0.5,          # token embedding std: clear greedy margins
      "batches": tuple(int(b) for b in a.batches.split("-")),
      "prompt_len": a.prompt,
      "max_new_tokens": a.new,
      "compile_new_tokens": tuple(int(n) for n in a.compile_lengths.split("-")),
      "compile_batch": 1,
      "repeats": a.repeats,
      "parity_batch": 8,         # random sequences for the HF logits check
      "parity_len": 64,
      "with_hf": a.hf,
  })
  if a.quick:
    c.name = "decode_quick"
    c.model.update({"vocab_size": 64, "max_len": 32, "dim": 32, "num_layers": 2,
                    "num_heads": 2})
    c.batches = (1, 4)
    c.prompt_len = 4
    c.max_new_tokens = 8
    c.compile_new_tokens = (4, 16)
    c.repeats = 1
    c.parity_batch = 4
    c.parity_len = 16
  return c
