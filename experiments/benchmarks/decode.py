"""Decode throughput of the autoregressive transformer: KV cache vs recomputation, vs GPT-2.

A random-weight GPT-2-style research.autoregressive TransformerLM (learned
positions, LayerNorm, tied embeddings, tanh GELU) generates max_new_tokens
greedy tokens (temperature 0, no stop token) after a prompt of prompt_len
random tokens, with research.autoregressive.decoding.decode, two ways:

  cached:    TransformerLM.make_prefill_fn + make_step_fn, the KV cache of
             P + N slots (one token's work per step);
  recompute: the baseline below, whose state is a token buffer [B, P + N]:
             each step writes the fed token at its position and runs the full
             TransformerLM.apply over the whole buffer, reading the logits at
             that position (causal, so the unfilled slots do not matter).

Each is one jitted program (decode's lax.while_loop inside), compiled ahead
(compile time reported), warmed up by one call, then timed over `repeats`
calls with block_until_ready; the median is reported as generated tokens/s
(B * N / seconds, prefill included). The two methods' greedy tokens must be
identical (asserted). Compile time against max_new_tokens is measured too,
with the size of the lowered program, which must not grow (the loop is a
while_loop, not unrolled).

With torch and transformers installed, the peer (experiments.benchmarks.
peers_hf_gpt2) is a GPT2LMHeadModel loaded with the same parameters: the largest
|logits difference| over a batch of random sequences, whether HF
generate(do_sample=False, use_cache=True) gives our greedy tokens, and its
tokens/s (warm-up call, median of `repeats`) as a ratio to ours. The same
GPT-2 in float64 is the reference that shows how much of the logits gap is
float32 rounding (each side's distance to it is reported).

The parameters are the initial ones with every leaf perturbed (numpy noise:
biases and norm offsets non-zero, token embeddings of std embed_std) so the
parity check exercises every weight and greedy argmaxes have clear margins.
"""

from __future__ import annotations

import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks import peers_hf_gpt2 as peer
from experiments.benchmarks import report
from research.autoregressive import decoding
from research.autoregressive.transformer import TransformerConfig, TransformerLM

COLUMNS = ["batch", "prompt", "new tokens", "cached tok/s", "recompute tok/s",
           "cached / recompute", "hf tok/s", "cached / hf", "cached compile s",
           "recompute compile s", "cached = recompute", "cached = hf"]
COMPILE_COLUMNS = ["new tokens", "cache slots", "cached compile s",
                   "recompute compile s", "cached hlo chars",
                   "recompute hlo chars", "cached tok/s"]


def model_config(config) -> TransformerConfig:
  m = config.model
  return TransformerConfig(
      vocab_size=m.vocab_size, max_len=m.max_len, dim=m.dim,
      num_layers=m.num_layers, num_heads=m.num_heads, mlp_ratio=m.mlp_ratio,
      norm="layer", positions="learned", tie_embeddings=True,
      norm_eps=m.norm_eps)


def random_params(model: TransformerLM, seed: int, embed_std: float) -> dict:
  """Initial parameters with every leaf perturbed (module docstring); numpy, nothing compiled."""
  rng = np.random.default_rng(seed)
  params = model.init(jax.random.key(seed))

  def perturb(path, p):
    name = jax.tree_util.keystr(path)
    p = np.asarray(p, np.float32)
    noise = rng.standard_normal(p.shape).astype(np.float32)
    if "embed" in name and "embedding" in name:
      std = embed_std if "position" not in name else 0.5 * embed_std
      return jnp.asarray(std * noise)
    if "scale" in name:
      return jnp.asarray(1.0 + 0.1 * noise)
    if "bias" in name:
      return jnp.asarray(0.1 * noise)
    return jnp.asarray(p + 0.1 * noise / np.sqrt(p.shape[0]))

  return jax.tree_util.tree_map_with_path(perturb, params)


def recompute_fns(model: TransformerLM, params):
  """(step_fn, prefill_fn) without a cache: state is the token buffer [B, L].

  Every call runs the full causal pass over the whole buffer and reads the
  logits at the fed position (prefill: at prompt_lengths - 1).
  """

  def step_fn(buf, tokens, positions):
    rows = jnp.arange(buf.shape[0])
    buf = buf.at[rows, positions].set(tokens.astype(buf.dtype), mode="drop")
    logits = model.apply(params, buf)
    return logits[rows, jnp.clip(positions, 0, buf.shape[1] - 1)], buf

  def prefill_fn(buf, prompt, lengths):
    rows = jnp.arange(buf.shape[0])
    buf = buf.at[:, :prompt.shape[1]].set(prompt.astype(buf.dtype))
    logits = model.apply(params, buf)
    return logits[rows, jnp.clip(lengths - 1, 0, prompt.shape[1] - 1)], buf

  return step_fn, prefill_fn


def decode_program(model: TransformerLM, method: str, batch: int, prompt_len: int,
                   max_new_tokens: int):
  """f(params, prompt, lengths) -> greedy tokens [B, N], one decode call, not jitted."""
  slots = prompt_len + max_new_tokens

  def run(params, prompt, lengths):
    if method == "cached":
      state = model.init_cache(batch, slots)
      step_fn, prefill_fn = model.make_step_fn(params), model.make_prefill_fn(params)
    else:
      state = jnp.zeros((batch, slots), jnp.int32)
      step_fn, prefill_fn = recompute_fns(model, params)
    out = decoding.decode(jax.random.key(0), step_fn, state, prompt, lengths,
                          max_new_tokens=max_new_tokens, temperature=0.0,
                          prefill_fn=prefill_fn)
    return out.tokens

  return run


def _compiled(fn, *args):
  """(compiled, compile seconds incl. lowering, lowered program size in chars)."""
  t0 = time.perf_counter()
  lowered = jax.jit(fn).lower(*args)
  compiled = lowered.compile()
  seconds = time.perf_counter() - t0
  return compiled, seconds, len(lowered.as_text())


def _median_seconds(call, repeats: int):
  """(median wall seconds of `repeats` calls after one warm-up call, last output)."""
  out = call()
  jax.block_until_ready(out)
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = call()
    jax.block_until_ready(out)
    times.append(time.perf_counter() - t0)
  return statistics.median(times), out


def _ours(model, params, method, prompt, max_new_tokens, repeats):
  batch, width = prompt.shape
  lengths = jnp.full((batch,), width, jnp.int32)
  prompt = jnp.asarray(prompt, jnp.int32)
  fn = decode_program(model, method, batch, width, max_new_tokens)
  compiled, compile_s, hlo = _compiled(fn, params, prompt, lengths)
  if repeats:
    seconds, tokens = _median_seconds(lambda: compiled(params, prompt, lengths),
                                      repeats)
  else:
    seconds, tokens = None, None
  return {"seconds": seconds, "tokens": None if tokens is None else np.asarray(tokens),
          "compile_s": compile_s, "hlo_chars": hlo,
          "tok_s": None if seconds is None else batch * max_new_tokens / seconds}


def _hf(hf_model, prompt, max_new_tokens, repeats):
  batch = prompt.shape[0]
  seconds, tokens = _median_seconds(
      lambda: peer.generate(hf_model, prompt, max_new_tokens), repeats)
  if tokens.shape != (batch, max_new_tokens):
    raise RuntimeError(f"HF generate returned shape {tokens.shape}, expected "
                       f"{(batch, max_new_tokens)}")
  return {"tokens": tokens, "tok_s": batch * max_new_tokens / seconds}


def _mismatch(a: np.ndarray, b: np.ndarray) -> str:
  rows = np.nonzero(np.any(a != b, axis=1))[0]
  first = int(np.argmax(a[rows[0]] != b[rows[0]]))
  return (f"{len(rows)} of {a.shape[0]} rows differ (row {int(rows[0])} first at "
          f"token {first}: {a[rows[0], first]} vs {b[rows[0], first]})")


def _equal(a, b) -> str:
  return "yes" if np.array_equal(a, b) else "no: " + _mismatch(a, b)


def check_config(config) -> TransformerConfig:
  """Refuse sizes that cannot run, before anything is compiled; returns the model config."""
  for name in ("prompt_len", "max_new_tokens", "repeats", "parity_batch"):
    value = config[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"config.{name} must be an integer >= 1, got {value!r}")
  for name in ("batches", "compile_new_tokens"):
    values = tuple(config[name])
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                         for v in values):
      raise ValueError(f"config.{name} must list integers >= 1, got {values!r}")
  cfg = model_config(config)
  longest = config.prompt_len + max(config.max_new_tokens,
                                    *config.compile_new_tokens)
  if longest > cfg.max_len:
    raise ValueError(f"config.model.max_len = {cfg.max_len} must be >= prompt_len"
                     f" + the largest new-token count = {longest}")
  return cfg


def run(config) -> dict:
  """Throughput rows per batch, compile-vs-length rows and the HF parity numbers."""
  cfg = check_config(config)
  model = TransformerLM(cfg)
  params = random_params(model, config.seed, config.embed_std)
  num_params = sum(int(p.size) for p in jax.tree.leaves(params))
  rng = np.random.default_rng(config.seed + 1)
  installed = peer.available()
  with_hf = config.with_hf and installed
  skipped = "not installed" if not installed else "disabled"
  hf_model, parity = None, {"installed": installed, "ran": with_hf}
  if with_hf:
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
    hf_model = peer.build(cfg)
    peer.load_params(hf_model, params)
    seqs = rng.integers(0, cfg.vocab_size, (config.parity_batch, config.parity_len))
    ours = np.asarray(jax.jit(model.apply)(params, jnp.asarray(seqs, jnp.int32)))
    theirs = peer.logits(hf_model, seqs)
    reference = peer.logits(hf_model, seqs, float64=True)
    parity.update({"logits_max_abs_diff": float(np.abs(ours - theirs).max()),
                   "logits_max_abs": float(np.abs(ours).max()),
                   "ours_vs_float64": float(np.abs(ours - reference).max()),
                   "hf_vs_float64": float(np.abs(theirs - reference).max()),
                   "sequences": list(seqs.shape), **peer.versions()})

  rows, greedy = [], {}
  n = config.max_new_tokens
  for batch in config.batches:
    prompt = rng.integers(0, cfg.vocab_size, (batch, config.prompt_len))
    cached = _ours(model, params, "cached", prompt, n, config.repeats)
    recompute = _ours(model, params, "recompute", prompt, n, config.repeats)
    if not np.array_equal(cached["tokens"], recompute["tokens"]):
      raise AssertionError(f"decode benchmark: cached and recompute greedy tokens "
                           f"differ at batch {batch}: "
                           f"{_mismatch(cached['tokens'], recompute['tokens'])}")
    hf = _hf(hf_model, prompt, n, config.repeats) if with_hf else None
    same_hf = _equal(cached["tokens"], hf["tokens"]) if hf else skipped
    greedy[batch] = {"cached_equals_recompute": True, "cached_equals_hf": same_hf}
    rows.append({
        "batch": batch, "prompt": config.prompt_len, "new tokens": n,
        "cached tok/s": cached["tok_s"], "recompute tok/s": recompute["tok_s"],
        "cached / recompute": cached["tok_s"] / recompute["tok_s"],
        "hf tok/s": hf["tok_s"] if hf else skipped,
        "cached / hf": cached["tok_s"] / hf["tok_s"] if hf else None,
        "cached compile s": cached["compile_s"],
        "recompute compile s": recompute["compile_s"],
        "cached = recompute": "yes", "cached = hf": same_hf,
    })
  if with_hf:
    parity["greedy_identical"] = all(g["cached_equals_hf"] == "yes"
                                     for g in greedy.values())

  scaling = []
  batch = config.compile_batch
  prompt = rng.integers(0, cfg.vocab_size, (batch, config.prompt_len))
  for new in config.compile_new_tokens:
    cached = _ours(model, params, "cached", prompt, new, config.repeats)
    recompute = _ours(model, params, "recompute", prompt, new, 0)
    scaling.append({"new tokens": new, "cache slots": config.prompt_len + new,
                    "cached compile s": cached["compile_s"],
                    "recompute compile s": recompute["compile_s"],
                    "cached hlo chars": cached["hlo_chars"],
                    "recompute hlo chars": recompute["hlo_chars"],
                    "cached tok/s": cached["tok_s"]})
  spread = lambda key: (max(r[key] for r in scaling) / min(r[key] for r in scaling))

  dev = jax.devices()[0]
  notes = [
      f"Model: random-weight GPT-2-style TransformerLM, {cfg.num_layers} layers, "
      f"{cfg.num_heads} heads, dim {cfg.dim}, vocab {cfg.vocab_size}, max_len "
      f"{cfg.max_len}, {num_params} parameters, float32. Greedy decode, prompt "
      f"{config.prompt_len} random tokens, {n} new tokens, no stop token; tok/s = "
      f"batch * new tokens / median of {config.repeats} timed calls after one "
      f"warm-up (prefill included); compile s = lower + compile, reported apart.",
      "cached: KV cache (make_prefill_fn + make_step_fn); recompute: full "
      "TransformerLM.apply over a [B, prompt + new] token buffer every step. "
      "Greedy tokens of the two are asserted identical.",
      "",
      f"Compile time against max_new_tokens (batch {batch}; 'hlo chars': size of the "
      f"lowered program, which must not grow: decode is one lax.while_loop; "
      f"tok/s of the cached decode):",
      "",
      report.table(COMPILE_COLUMNS, scaling),
      "",
      f"compile time max / min over {tuple(config.compile_new_tokens)} new tokens: "
      f"cached {spread('cached compile s'):.2f}, recompute "
      f"{spread('recompute compile s'):.2f}; lowered size max / min: cached "
      f"{spread('cached hlo chars'):.3f}, recompute {spread('recompute hlo chars'):.3f}.",
  ]
  if with_hf:
    notes.append(
        f"HF peer: transformers {parity['transformers']} GPT2LMHeadModel with our "
        f"weights, torch {parity['torch']} CPU, {parity['threads']} threads; "
        f"generate(do_sample=False, use_cache=True). Logits parity over "
        f"{parity['sequences'][0]} random sequences of {parity['sequences'][1]} "
        f"tokens: max |ours - hf| = {parity['logits_max_abs_diff']:.3g} (logits up "
        f"to {parity['logits_max_abs']:.3g}; float32 rounding: against the same "
        f"GPT-2 in float64, ours {parity['ours_vs_float64']:.3g}, hf "
        f"{parity['hf_vs_float64']:.3g}); greedy tokens identical at every "
        f"batch: {'yes' if parity['greedy_identical'] else 'NO'}.")
  else:
    notes.append(f"HF peer: {skipped} (it needs torch and transformers; "
                 f"config.with_hf turns it off): skipped.")
  notes.append(f"jax {jax.__version__} on {dev.platform} ({dev.device_kind}), "
               f"{os.cpu_count()} CPU cores.")
  return {"title": "Greedy decode tokens/s: KV cache vs recompute vs HF GPT-2",
          "columns": COLUMNS, "rows": rows, "notes": notes,
          "compile_scaling": scaling, "parity": parity,
          "greedy": {str(k): v for k, v in greedy.items()}}
