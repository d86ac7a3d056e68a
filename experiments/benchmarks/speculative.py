"""Speculative decoding on trained autoregressive models: acceptance rate and speed-up.

The target is a trained autoregressive workdir (experiments/families/autoregressive.py,
EMA parameters of replica 0); each draft is one of

  WORKDIR   another autoregressive workdir (a small transformer on the same data; its
            vocabulary must be the target's, else ValueError);
  bigram    the count model p(x_t | x_{t-1}) = (n(x_{t-1}, x_t) + alpha) /
            (n(x_{t-1}) + alpha V) fitted on the target's train split
            (research/autoregressive/likelihood.py fit_counts, alpha = the family's
            COUNT_ALPHA), whose step function is a table lookup with no state;
  unigram   the same with no context, p(x_t) = (n(x_t) + alpha) / (N + alpha V).

Count-model logits are -inf outside the target's output vocabulary (images: the grey
levels), like the target's.

For each batch B, sampling setting (temperature T, top-p), draft and K = num_draft,
research.autoregressive.speculative.speculative_decode (Leviathan et al. 2023; Chen et
al. 2023) samples the target's prompts (family.prompt_for: the label token or the
opening boundary) for N = the family's max_new_tokens (a data example's length; or
config.max_new_tokens), and research.autoregressive.decoding.decode samples the target
alone (KV cache and prefill, the same controls, stop and pad tokens). Reported:

  accept        sum accepted / sum drafted (every row, round and timed call). Drafts
                after a round's first rejection count as drafted, so this falls with K
                even when the per-token acceptance does not;
  iid alpha     the per-token acceptance probability alpha of Leviathan et al. 2023
                (Sec. 3.1: each draft token accepted independently with probability
                alpha, so E[accepted per round] = sum_{i=1..K} alpha^i and E[tokens per
                round] = (1 - alpha^(K+1)) / (1 - alpha), their eq. 1), solved from the
                measured accepted / verify calls; comparable across K;
  tok/call      generated tokens / target verify calls (decode: 1 per step);
  rounds        while-loop iterations per call, the most verify calls of any row (a batch
                runs until its last row is done), averaged over the timed calls;
  tok/s         the median over `repeats` timed calls, after one warm-up call, of the
                generated tokens (sum of the rows' lengths) / wall seconds
                (block_until_ready; the prompt's prefill included). Timed call r uses
                the key fold_in(key, r), so the counts (summed over the calls) cover
                repeats x B samples; speed-up = spec tok/s / target tok/s;
  round / step  median seconds per round / the target alone's median seconds per step
                (decode's loop runs until its longest row is done: one step per token of
                it): what one round (K + 1 draft steps, one verify call of K + 1 tokens,
                the acceptance test) costs in target steps. With a fixed length N,
                speed-up ~ (N / rounds) / (round / step);
  compile s     lower + compile of each jitted program, apart from the timing.

Each program is compiled once per (draft, K, B): the controls are traced data, so every
sampling setting reuses it. At T = 0 the speculative tokens must equal the target's
greedy decode (module docstring of speculative.py); the table says yes or no (with the
first difference in the notes). The models alone (decode at T = 1) give each draft's
step cost against the target's, c = target tok/s / draft tok/s (Leviathan et al.'s c).

Caches. speculative_decode feeds positions < P + N + K - 1, decode < P + N - 1 (with
prefill the last token is never fed), so the target's and an AR draft's caches get
P + N + K - 1 slots and decode's P + N - 1. A family's N fills its context (P + N - 1 =
max_len), so the speculative caches need K slots more than TransformerLM.init_cache
allows (it refuses max_len > config.max_len). With RoPE no parameter depends on
max_len, so the model is rebuilt with config.max_len = P + N + K - 1 and the same
parameters (the parameter shapes are checked equal): every kept token's logits are
exactly the model's, and the positions past the trained context only score draft
tokens past max_new_tokens, which are cut off. Learned positions have a table of
max_len rows: there a too-long setting raises ValueError naming the largest
config.max_new_tokens that fits.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import run as run_lib
from experiments import sampling
from experiments.benchmarks import report
from experiments.benchmarks.decode import _compiled
from experiments.families import autoregressive as ar_family
from research.autoregressive import decoding, likelihood, speculative
from research.autoregressive.transformer import TransformerLM

COLUMNS = ["draft", "K", "sampling", "batch", "accept", "iid alpha", "tok/call", "rounds",
           "spec tok/s", "target tok/s", "speed-up", "round / step", "spec compile s",
           "target compile s", "greedy = target"]
MODEL_COLUMNS = ["model", "batch", "tok/s", "compile s", "cost c vs target"]
COUNT_DRAFTS = ("bigram", "unigram")


@dataclasses.dataclass
class Model:
  """A decodable model: fns(params) -> a decode_fns-style dict; its params; a description."""
  fns: object
  params: object
  describe: str


def _load_family(workdir: str):
  """(family, EMA params of replica 0) of an autoregressive workdir."""
  run, state = sampling.load(workdir)
  if run.config.family != ar_family.Autoregressive.name:
    raise ValueError(f"{workdir} is a {run.config.family!r} run; speculative decoding needs "
                     f"an autoregressive workdir (configs/ar_digits.py, configs/ar_text.py)")
  return run.family, run_lib.replica_params(run, state["ema_params"], 0)


def vocabulary(family) -> tuple:
  """What a token id means: images (levels, num_classes); text the character list."""
  if family.kind == "image":
    return ("image", family.levels, family.num_classes)
  return ("text", tuple(family.dataset.vocab))


def _with_context(family, slots: int, n: int, where: str):
  """The family itself if its transformer's cache holds `slots` positions, else a copy
  whose transformer has config.max_len = slots and the same parameters (RoPE only);
  ValueError naming the largest max_new_tokens that fits when the parameters differ."""
  cfg = family.lm.config
  if slots <= cfg.max_len:
    return family
  longer = TransformerLM(dataclasses.replace(cfg, max_len=slots))
  shapes = lambda lm: jax.tree.map(lambda a: (a.shape, a.dtype),
                                   jax.eval_shape(lm.init, jax.random.key(0)))
  if shapes(longer) != shapes(family.lm):
    raise ValueError(
        f"{where}: speculative decoding needs caches of P + N + K - 1 = {slots} slots but the "
        f"model's context is max_len = {cfg.max_len} and its {cfg.positions} positions have "
        f"parameters of that length; set config.max_new_tokens <= {n - (slots - cfg.max_len)} "
        f"or lower the ks (module docstring)")
  twin = copy.copy(family)
  twin.lm = longer
  return twin


def transformer_model(where: str, family, params, slots: int, n: int) -> Model:
  """The family's transformer with caches of `slots` positions (_with_context)."""
  c = family.lm.config
  return Model(_with_context(family, slots, n, where).decode_fns, params,
               f"transformer, {c.num_layers} layers, dim {c.dim}, {c.num_heads} heads, "
               f"{c.positions} positions, "
               f"{sum(int(p.size) for p in jax.tree.leaves(params))} parameters")


def count_model(name: str, family) -> Model:
  """The bigram or unigram count model of the family's train split, as a draft."""
  inputs, targets, mask = family.heldout_sequences("train")
  vocab_in, vocab_out = family.lm.config.vocab_size, family.out_vocab
  if name == "bigram":
    contexts, num = likelihood.bigram_contexts(inputs), vocab_in
  else:
    contexts, num = likelihood.unigram_contexts(inputs), 1
  table = likelihood.fit_counts(contexts, targets, mask, num_contexts=num,
                                vocab_size=vocab_out, alpha=ar_family.COUNT_ALPHA)
  table = np.concatenate([table, np.full((num, vocab_in - vocab_out), -np.inf)], axis=1)

  def fns(table):
    def step_fn(state, tokens, positions):
      del positions
      rows = tokens if name == "bigram" else jnp.zeros_like(tokens)
      return table[jnp.clip(rows, 0, table.shape[0] - 1)], state
    return {"step_fn": step_fn, "prefill_fn": None,
            "init_state": lambda rows, max_len=None: jnp.zeros((), jnp.int32)}

  return Model(fns, jnp.asarray(table, jnp.float32),
               f"add-{ar_family.COUNT_ALPHA:g} count model of the target's train split "
               f"({int(np.sum(mask))} tokens), a [{num}, {vocab_in}] table lookup")


def sampling_settings(entries) -> list[tuple[str, float, float]]:
  """(label, temperature, top_p) of entries 'T' or 'T/top_p'."""
  out = []
  for entry in entries:
    temp, _, top_p = str(entry).partition("/")
    t, p = float(temp), float(top_p) if top_p else 1.0
    if t < 0 or not 0 < p <= 1:
      raise ValueError(f"config.temperatures: {entry!r} needs T >= 0 and top_p in (0, 1]")
    label = "greedy" if t == 0 else f"T={t:g}" + (f" p={p:g}" if p < 1 else "")
    out.append((label, t, p))
  return out


def _check_ints(config, name):
  values = tuple(config[name])
  if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
    raise ValueError(f"config.{name} must list integers >= 1, got {values!r}")
  return values


def _spec_program(target: Model, draft: Model, batch, width, slots, k, n, stops, pad):
  def run(t_params, d_params, key, prompt, temperature, top_p):
    t, d = target.fns(t_params), draft.fns(d_params)
    return speculative.speculative_decode(
        key, t["chunk_fn"], t["init_state"](batch, slots), d["step_fn"],
        d["init_state"](batch, slots), prompt, jnp.full((batch,), width, jnp.int32),
        max_new_tokens=n, num_draft=k, temperature=temperature, top_p=top_p,
        stop_tokens=stops, pad_token=pad)
  return run


def _decode_program(model: Model, batch, width, slots, n, stops, pad):
  def run(params, key, prompt, temperature, top_p):
    f = model.fns(params)
    return decoding.decode(key, f["step_fn"], f["init_state"](batch, slots), prompt,
                           jnp.full((batch,), width, jnp.int32), max_new_tokens=n,
                           temperature=temperature, top_p=top_p, stop_tokens=stops,
                           pad_token=pad, prefill_fn=f["prefill_fn"])
  return run


def _timed(call, key, repeats: int, iterations) -> dict:
  """call(key) once to warm up, then with keys fold_in(key, 1..repeats) (block_until_ready).

  Returns the median over the timed calls of tokens / seconds (tok_s) and of seconds /
  iterations(output) (s_per_iteration), the mean iterations, the mean row length and
  the timed calls' outputs.
  """
  jax.block_until_ready(call(key))
  outputs, tok_s, per_iteration, counts = [], [], [], []
  for r in range(1, repeats + 1):
    k = jax.random.fold_in(key, r)
    t0 = time.perf_counter()
    out = jax.block_until_ready(call(k))
    seconds = time.perf_counter() - t0
    lengths = np.asarray(out.lengths)
    outputs.append(out)
    tok_s.append(float(lengths.sum()) / seconds)
    counts.append(iterations(out))
    per_iteration.append(seconds / counts[-1])
  return {"tok_s": statistics.median(tok_s), "s_per_iteration": statistics.median(per_iteration),
          "iterations": float(np.mean(counts)), "outputs": outputs,
          "mean_length": float(np.mean([np.mean(np.asarray(o.lengths)) for o in outputs]))}


def iid_alpha(accepted_per_round: float, k: int) -> float:
  """alpha with sum_{i=1..K} alpha^i = accepted_per_round (bisection; 1 at K or more)."""
  if accepted_per_round >= k:
    return 1.0
  lo, hi = 0.0, 1.0
  for _ in range(60):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if sum(mid ** i for i in range(1, k + 1)) < accepted_per_round else \
        (lo, mid)
  return 0.5 * (lo + hi)


def _mismatch(a, b) -> str:
  rows = np.nonzero(np.any(a != b, axis=1))[0]
  first = int(np.argmax(a[rows[0]] != b[rows[0]]))
  return (f"{len(rows)} of {a.shape[0]} rows differ (row {int(rows[0])} first at token "
          f"{first}: {a[rows[0], first]} vs {b[rows[0], first]})")


def run(config) -> dict:
  """Rows per (draft, K, sampling, batch), the models-alone table, and notes."""
  ks, batches = _check_ints(config, "ks"), _check_ints(config, "batches")
  repeats = config.repeats
  if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
    raise ValueError(f"config.repeats must be an integer >= 1, got {repeats!r}")
  settings = sampling_settings(config.temperatures)
  if not config.drafts:
    raise ValueError("config.drafts must name at least one draft (a workdir, bigram, unigram)")
  family, t_params = _load_family(config.target)
  prompt1, family_new = family.prompt_for(1)
  width = int(prompt1.shape[1])
  n = int(config.max_new_tokens) or int(family_new)
  if not 1 <= n <= family_new:
    raise ValueError(f"config.max_new_tokens must be in [0, {family_new}] (0: the family's "
                     f"{family_new}, a data example), got {config.max_new_tokens}")
  dec_slots = width + n - 1
  largest_first = sorted(ks, reverse=True)   # the largest K's cache check fails first
  target = {k: transformer_model(config.target, family, t_params, width + n + k - 1, n)
            for k in largest_first}
  target_alone = transformer_model(config.target, family, t_params, dec_slots, n)

  drafts = []   # (label, {K: Model}, alone Model)
  for entry in config.drafts:
    if entry in COUNT_DRAFTS:
      m = count_model(entry, family)
      drafts.append((entry, {k: m for k in ks}, m))
      continue
    d_family, d_params = _load_family(entry)
    if vocabulary(d_family) != vocabulary(family):
      raise ValueError(f"draft {entry} has the vocabulary {vocabulary(d_family)}, the target "
                       f"{config.target} {vocabulary(family)}: a draft must share the "
                       f"target's tokens")
    label = os.path.basename(os.path.normpath(entry))
    if label in [d[0] for d in drafts] or label in COUNT_DRAFTS:
      label = entry   # two workdirs of one name: the rows name the paths
    drafts.append((label, {k: transformer_model(f"draft {entry}", d_family, d_params,
                                                width + n + k - 1, n)
                           for k in largest_first},
                   transformer_model(f"draft {entry}", d_family, d_params, dec_slots, n)))

  fns0 = family.decode_fns(t_params)
  stops, pad = fns0["stop_tokens"], fns0["pad_token"]
  key = jax.random.key(config.seed)
  rows, models, mismatches = [], [], []
  for batch in batches:
    prompt, _ = family.prompt_for(batch)
    prompt = jnp.asarray(prompt, jnp.int32)
    controls = lambda t, p: (jnp.asarray(t, jnp.float32), jnp.asarray(p, jnp.float32))

    def alone(model):
      fn = _decode_program(model, batch, width, dec_slots, n, stops, pad)
      compiled, compile_s, _ = _compiled(fn, model.params, key, prompt, *controls(1.0, 1.0))
      per_setting = {}
      for label, t, p in settings:
        c = controls(t, p)
        # decode's loop runs until its longest row is done: one step per token of it
        per_setting[label] = _timed(lambda k: compiled(model.params, k, prompt, *c), key,
                                    repeats, lambda out: int(np.max(np.asarray(out.lengths))))
      return compile_s, per_setting

    base_compile, base = alone(target_alone)
    one = next((s for s in settings if s[1] == 1.0 and s[2] == 1.0), settings[0])[0]
    models.append({"model": "target", "batch": batch, "tok/s": base[one]["tok_s"],
                   "compile s": base_compile, "cost c vs target": 1.0, "sampling": one})
    for label, per_k, alone_model in drafts:
      d_compile, d_alone = alone(alone_model)
      models.append({"model": label, "batch": batch, "tok/s": d_alone[one]["tok_s"],
                     "compile s": d_compile, "sampling": one,
                     "cost c vs target": base[one]["tok_s"] / d_alone[one]["tok_s"]})
      for k in ks:
        draft = per_k[k]
        fn = _spec_program(target[k], draft, batch, width, width + n + k - 1, k, n, stops, pad)
        compiled, compile_s, _ = _compiled(fn, t_params, draft.params, key, prompt,
                                           *controls(1.0, 1.0))
        for s_label, t, p in settings:
          c = controls(t, p)
          # rounds: the while loop's iterations, until the row with the most calls is done
          spec = _timed(lambda kk: compiled(t_params, draft.params, kk, prompt, *c), key,
                        repeats, lambda out: int(np.max(np.asarray(out.target_calls))))
          outs = spec["outputs"]
          total = lambda field: float(sum(np.sum(np.asarray(getattr(o, field))) for o in outs))
          accepted, calls, tokens = total("accepted"), total("target_calls"), total("lengths")
          if t == 0:
            got, want = np.asarray(outs[-1].tokens), base[s_label]["outputs"][-1].tokens
            same = np.array_equal(got, np.asarray(want))
            greedy = "yes" if same else "no"
            if not same:
              mismatches.append(f"{label} K={k} batch {batch}: "
                                f"{_mismatch(got, np.asarray(want))}")
          else:
            greedy = "-"
          rows.append({
              "draft": label, "K": k, "sampling": s_label, "batch": batch,
              "accept": accepted / total("drafted"),
              "iid alpha": iid_alpha(accepted / calls, k),
              "tok/call": tokens / calls, "rounds": spec["iterations"],
              "spec tok/s": spec["tok_s"], "target tok/s": base[s_label]["tok_s"],
              "speed-up": spec["tok_s"] / base[s_label]["tok_s"],
              "round / step": spec["s_per_iteration"] / base[s_label]["s_per_iteration"],
              "spec compile s": compile_s, "target compile s": base_compile,
              "greedy = target": greedy, "mean length": tokens / (len(outs) * batch),
              "target mean length": base[s_label]["mean_length"]})
  order = {lab: i for i, (lab, _, _) in enumerate(drafts)}
  s_order = {lab: i for i, (lab, _, _) in enumerate(settings)}
  rows.sort(key=lambda r: (order[r["draft"]], r["batch"], s_order[r["sampling"]], r["K"]))

  dev = jax.devices()[0]
  c = family.lm.config
  notes = [
      f"Target: {config.target} ({family.config.data.name}; {target_alone.describe}, EMA "
      f"params of replica 0); "
      f"prompt {width} token(s) (family.prompt_for), N = {n} new tokens"
      + (f", stop tokens {tuple(stops)}" if stops else ", no stop token") + ".",
      *(f"Draft {label}: {m.describe}." for label, _, m in drafts),
      f"Caches: speculative P + N + K - 1 = {width + n - 1} + K slots, decode P + N - 1 = "
      f"{dec_slots}; the model's context is {c.max_len}"
      + (" (RoPE: rebuilt with a longer max_len, same parameters; module docstring)."
         if width + n + max(ks) - 1 > c.max_len else "."),
      f"tok/s = median over {repeats} timed calls (keys fold_in(seed, 1..{repeats}), after "
      f"one warm-up call) of generated tokens / seconds (prefill included); the counts are "
      f"summed over the timed calls; accept = accepted / drafted; iid alpha solves sum_(i<=K) "
      f"alpha^i = accepted / verify calls; tok/call = tokens / verify calls; rounds = "
      f"loop iterations per call (the most verify calls of a row), averaged; round / step "
      f"= seconds per round / the target's seconds per step alone (its longest row's "
      f"length).",
      "",
      f"Models alone (decode, {one}; cost c = target tok/s / model tok/s):",
      "",
      report.table(MODEL_COLUMNS, models),
      "",
  ]
  notes += ([f"greedy mismatches: {m}" for m in mismatches] if mismatches else
            ["Greedy: the speculative tokens equal the target's greedy decode in every "
             "greedy row."] if any(s[1] == 0 for s in settings) else [])
  notes.append(f"jax {jax.__version__} on {dev.platform} ({dev.device_kind}), "
               f"{os.cpu_count()} CPU cores.")
  return {"title": f"Speculative decoding on {os.path.basename(os.path.normpath(config.target))}"
                   f": acceptance and speed-up vs the target alone",
          "columns": COLUMNS, "rows": rows, "notes": notes, "models": models,
          "greedy_mismatches": mismatches,
          "setup": {"target": config.target, "drafts": list(config.drafts), "ks": list(ks),
                    "batches": list(batches), "max_new_tokens": n, "prompt_len": width,
                    "repeats": repeats, "sampling": [list(s) for s in settings]}}
