"""Speculative sampling: a draft model proposes, the target verifies in one call.

Leviathan et al. 2023 ("Fast Inference from Transformers via Speculative
Decoding") and Chen et al. 2023 ("Accelerating Large Language Model Decoding
with Speculative Sampling"). Contract::

  target_fn(state, tokens[B, K] int32, positions[B, K] int32) -> (logits[B, K, V], state)
  draft_step_fn(state, tokens[B] int32, positions[B] int32) -> (logits[B, V], state)

``target_fn`` is a chunk function (``TransformerLM.make_chunk_fn``, or
``chunk_from_step(step_fn)`` for any step function). Both states must be
position-addressed, like the transformer's KV cache (slot = position): feeding
a token at position t replaces what an earlier call fed there, and logits at
position t depend only on what was fed at positions <= t. So rejected draft
tokens need no rollback: the next round starts at the last kept position and
overwrites them. A stateless model (a Markov chain) qualifies; a recurrent
state does not.

One round, for each live row whose sequence (prompt and output so far) ends
with token x at position L - 1, with p = softmax(filter(target logits)) and
q = softmax(filter(draft logits)), ``filter`` = ``filters.filter_logits`` with
the same temperature, top-k, top-p and min-p for both:

1. the draft, fed x at position L - 1 and then its own tokens, draws
   d_1..d_K ~ q_1..q_K one at a time (K = num_draft; K + 1 draft calls, the
   last only writing d_K into the draft state);
2. one target call on [x, d_1..d_K] at positions L - 1..L + K - 1 gives
   p_1..p_{K+1}, p_i the target's distribution of the token after
   [..., x, d_1..d_{i-1}] (q_i likewise the draft's);
3. d_i is accepted with probability min(1, p_i(d_i) / q_i(d_i)) (tested as
   u q_i(d_i) < p_i(d_i), u ~ U[0, 1)) until the first rejection, at which
   place a token is drawn from norm(max(0, p_i - q_i)) (from p_i in the
   float32 corner case where that residual sums to 0); if all K are accepted,
   a bonus token is drawn from p_{K+1}.

Each round emits a + 1 tokens (a accepted), each distributed exactly as under
p, the target's filtered distribution; a row keeps them up to max_new_tokens
and its first stop token. temperature = 0 makes p and q one-hot at the
argmaxes: a draft token is kept iff it is the target's argmax, then the
target's argmax follows, which is greedy decoding of the target.

Rows advance by different amounts at per-row positions; the loop exits when
every row has max_new_tokens or a stop token. Row i's round starting with n
generated tokens uses the noise of fold_in(fold_in(key, n), i), so a row's
result does not depend on the other rows. Positions fed are < P +
max_new_tokens + num_draft - 1 (size caches to that); the prompt goes through
``target_fn`` as one chunk and through the draft token by token.

No repetition penalty: it depends on each row's history, so it would have to
be applied to target and draft identically for every drafted prefix (the
seen-set changes within a round); left out.

Outputs as ``decode``'s (tokens, lengths, log_probs: log p of each kept token
under the target's filtered distribution, 0 for greedy), plus per-row counts:
accepted (draft tokens accepted by the rule, summed over rounds, whether or not
a stop or max_new_tokens cut them off), drafted (K per round) and target_calls
(verify calls, the prompt's excluded). Concrete invalid values raise
ValueError naming the argument; a traced invalid one gives its rows tokens and
lengths -1, log_probs NaN.
"""
import functools
import typing

import jax
import jax.numpy as jnp

from research.autoregressive import arguments, filters
from research.sampling import discrete

_INVALID_ID = -1


class SpeculativeDecoded(typing.NamedTuple):
  """Output of ``speculative_decode``.

  tokens: [B, max_new_tokens] int32; after row i's first stop token, pad_token.
  lengths: [B] int32, generated tokens up to and including the first stop.
  log_probs: [B, max_new_tokens] float32, log p of each token under the
    target's filtered distribution (0 after the stop, 0 for greedy).
  accepted: [B] int32, draft tokens accepted (summed over rounds).
  drafted: [B] int32, draft tokens proposed (num_draft per round).
  target_calls: [B] int32, verify calls of target_fn while the row was live.
  """
  tokens: jax.Array
  lengths: jax.Array
  log_probs: jax.Array
  accepted: jax.Array
  drafted: jax.Array
  target_calls: jax.Array


def chunk_from_step(step_fn):
  """A chunk function from a step function: the K tokens fed in order (lax.scan).

  chunk_fn(state, tokens[B, K], positions[B, K]) -> (logits[B, K, V], state),
  logits[:, k] = step_fn's logits after feeding tokens[:, k] at positions[:, k].
  """

  def chunk_fn(state, tokens, positions):
    def step(state, tok_pos):
      logits, state = step_fn(state, tok_pos[0], tok_pos[1])
      return state, logits

    state, logits = jax.lax.scan(step, state, (jnp.swapaxes(tokens, 0, 1),
                                               jnp.swapaxes(positions, 0, 1)))
    return jnp.swapaxes(logits, 0, 1), state

  return chunk_fn


_fail = functools.partial(arguments.fail, "speculative_decode")
_is_int = arguments.is_int
_per_row = functools.partial(arguments.per_row, "speculative_decode")
_stop_array = functools.partial(arguments.stop_array, "speculative_decode")


def _vocab_size(target_fn, target_state, draft_step_fn, draft_state, batch,
                num_draft):
  """V from the output shapes of target_fn and draft_step_fn; ValueError if wrong."""
  chunk = jax.ShapeDtypeStruct((batch, num_draft + 1), jnp.int32)
  ids = jax.ShapeDtypeStruct((batch,), jnp.int32)
  target = jax.eval_shape(target_fn, target_state, chunk, chunk)[0].shape
  draft = jax.eval_shape(draft_step_fn, draft_state, ids, ids)[0].shape
  if len(target) != 3 or target[:2] != chunk.shape or target[2] < 1:
    raise ValueError(f"speculative_decode: target_fn must return logits of "
                     f"shape ({batch}, K, V) for K tokens a row, got {target} "
                     f"for K = {num_draft + 1}")
  if len(draft) != 2 or draft[0] != batch or draft[1] < 1:
    raise ValueError(f"speculative_decode: draft_step_fn must return logits "
                     f"of shape ({batch}, V), got {draft}")
  if draft[1] != target[2]:
    raise ValueError(f"speculative_decode: target_fn and draft_step_fn must "
                     f"share the vocabulary, got vocabulary sizes {target[2]} "
                     f"(target) and {draft[1]} (draft)")
  return target[2]


def speculative_decode(key, target_fn, target_state, draft_step_fn,
                       draft_state, prompt, prompt_lengths, *, max_new_tokens,
                       num_draft=4, temperature=1.0, top_k=0, top_p=1.0,
                       min_p=0.0, stop_tokens=(), pad_token=0):
  """Sample like ``decode`` from the target, drafting with a cheaper model.

  Args:
    key: PRNG key.
    target_fn: (state, tokens[B, K], positions[B, K]) -> (logits[B, K, V], state).
    target_state: the target's state (position-addressed; module docstring).
    draft_step_fn: (state, tokens[B], positions[B]) -> (logits[B, V], state).
    draft_state: the draft's state (position-addressed).
    prompt: [B, P] int token ids; entries past a row's length are ignored.
    prompt_lengths: [B] ints in [1, P].
    max_new_tokens: static int >= 1.
    num_draft: static int >= 1, draft tokens per round (K).
    temperature: T >= 0 (0: greedy), scalar or [B]; for target and draft.
    top_k: int in [0, V] (0: off), scalar or [B].
    top_p: in (0, 1] (1: off), scalar or [B].
    min_p: in [0, 1) (0: off), scalar or [B].
    stop_tokens: token ids in [0, V) ending a row (included in its output).
    pad_token: int written after a row's stop token and fed to finished rows.

  Returns:
    SpeculativeDecoded(tokens [B, max_new_tokens], lengths [B], log_probs
    [B, max_new_tokens], accepted [B], drafted [B], target_calls [B]).
  """
  caller = "speculative_decode"
  prompt = arguments.prompt_array(caller, prompt)
  batch, width = prompt.shape
  num_new = arguments.positive_static(caller, "max_new_tokens", max_new_tokens)
  k_draft = arguments.positive_static(caller, "num_draft", num_draft)
  arguments.pad_scalar(caller, pad_token)
  lengths, len_ok = arguments.prompt_lengths(caller, prompt_lengths, batch, width)
  vocab = _vocab_size(target_fn, target_state, draft_step_fn, draft_state,
                      batch, k_draft)
  arguments.prompt_tokens(caller, prompt, lengths, len_ok, vocab)
  controls, (t_ok, k_ok, p_ok, m_ok) = arguments.filter_controls(
      caller, batch, vocab, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
  temp, top_k, top_p, min_p = (controls[n] for n in ("temperature", "top_k", "top_p", "min_p"))
  stop, stop_ok = _stop_array(stop_tokens, vocab)
  valid = jnp.ones((batch,), jnp.bool_)
  for ok in (len_ok, t_ok, k_ok, p_ok, m_ok, stop_ok):
    if ok is not None:
      valid = valid & ok
  lengths = jnp.clip(lengths, 1, width)
  pad = jnp.asarray(pad_token, jnp.int32)
  rows = jnp.arange(batch)
  chunk = k_draft + 1
  offsets = jnp.arange(chunk, dtype=jnp.int32)

  def filtered(logits, copies):
    """filter_logits of [B * copies, V] logits (row-major), each row's controls."""
    rep = lambda x: jnp.repeat(x, copies)
    return filters.filter_logits(
        logits.astype(jnp.float32), jnp.zeros(logits.shape, jnp.bool_),
        temperature=rep(temp), top_k=rep(top_k), top_p=rep(top_p),
        min_p=rep(min_p), repetition_penalty=jnp.ones(logits.shape[:1]))

  def round_(carry):
    (target_state, draft_state, last, start, tokens, log_probs, count,
     stopped, accepted, drafted, calls) = carry
    live = ~stopped & (count < num_new)
    row_keys = jax.vmap(lambda n, i: jax.random.fold_in(
        jax.random.fold_in(key, n), i))(count, rows)
    parts = jax.vmap(lambda k: jax.random.split(k, 3))(row_keys)
    draft_noise = jax.vmap(lambda k: discrete.gumbel_noise(
        k, (chunk, vocab)))(parts[:, 0])
    uniforms = jax.vmap(lambda k: jax.random.uniform(k, (k_draft,)))(parts[:, 1])
    final_noise = jax.vmap(lambda k: discrete.gumbel_noise(k, (vocab,)))(
        parts[:, 2])
    first = jnp.where(live, last, pad)

    def draft_step(state_tok, i):
      state, tok = state_tok
      logits, state = draft_step_fn(state, tok, start + i)
      out = filtered(logits, 1)
      drawn = jnp.argmax(out + draft_noise[:, i], axis=-1).astype(jnp.int32)
      return (state, jnp.where(live, drawn, pad)), (drawn, out)

    (draft_state, _), (drafts, q_logits) = jax.lax.scan(
        draft_step, (draft_state, first), offsets)
    drafts = jnp.swapaxes(drafts, 0, 1)[:, :k_draft]               # [B, K]
    q = jax.nn.softmax(jnp.swapaxes(q_logits, 0, 1)[:, :k_draft], axis=-1)
    fed = jnp.concatenate([first[:, None],
                           jnp.where(live[:, None], drafts, pad)], axis=1)
    logits, target_state = target_fn(target_state, fed,
                                      start[:, None] + offsets[None])
    p_logits = filtered(logits.reshape(batch * chunk, vocab), chunk).reshape(
        batch, chunk, vocab)
    p = jax.nn.softmax(p_logits, axis=-1)
    pick = lambda probs, tok: jnp.take_along_axis(probs, tok[..., None],
                                                  axis=-1)[..., 0]
    ok = uniforms * pick(q, drafts) < pick(p[:, :k_draft], drafts)
    num_ok = jnp.sum(jnp.cumprod(ok, axis=1), axis=1)              # a [B]
    at = lambda x: jnp.take_along_axis(
        x, jnp.minimum(num_ok, x.shape[1] - 1)[:, None, None], axis=1)[:, 0]
    p_a = at(p)
    residual = jnp.where((num_ok < k_draft)[:, None],
                         jnp.maximum(p_a - at(q), 0.), p_a)
    residual = jnp.where(jnp.sum(residual, -1, keepdims=True) > 0, residual,
                         p_a)
    final = jnp.argmax(jnp.log(residual) + final_noise, axis=-1).astype(
        jnp.int32)
    emitted = jnp.where(offsets[None] < num_ok[:, None],
                        jnp.concatenate([drafts, drafts[:, :1]], axis=1),
                        final[:, None])                             # [B, K + 1]
    logp = pick(jax.nn.log_softmax(p_logits, axis=-1), emitted)
    is_stop = jnp.isin(emitted, stop)
    stop_before = jnp.cumsum(is_stop, axis=1) - is_stop > 0
    keep = (live[:, None] & (offsets[None] <= num_ok[:, None])
            & (count[:, None] + offsets[None] < num_new) & ~stop_before)
    for j in range(chunk):
      write = keep[:, j:j + 1] & (jnp.arange(num_new)[None]
                                  == (count + j)[:, None])
      tokens = jnp.where(write, emitted[:, j:j + 1], tokens)
      log_probs = jnp.where(write, logp[:, j:j + 1], log_probs)
    kept = jnp.sum(keep, axis=1).astype(jnp.int32)
    stopped = stopped | jnp.any(keep & is_stop, axis=1)
    count = count + kept
    last = jnp.where(live, pick(emitted, jnp.maximum(kept - 1, 0)), last)
    go_on = live & ~stopped & (count < num_new)
    start = jnp.where(go_on, start + kept, start)
    live_int = live.astype(jnp.int32)
    return (target_state, draft_state, last, start, tokens, log_probs, count,
            stopped, accepted + live_int * num_ok.astype(jnp.int32),
            drafted + live_int * k_draft, calls + live_int)

  if width > 1:
    head = jnp.broadcast_to(jnp.arange(width - 1, dtype=jnp.int32),
                            (batch, width - 1))
    _, target_state = target_fn(target_state, prompt[:, :-1], head)
    draft_state = jax.lax.fori_loop(
        0, width - 1,
        lambda t, s: draft_step_fn(s, prompt[:, t],
                                   jnp.full((batch,), t, jnp.int32))[1],
        draft_state)
  zeros = jnp.zeros((batch,), jnp.int32)
  carry = (target_state, draft_state, prompt[rows, lengths - 1], lengths - 1,
           jnp.full((batch, num_new), pad),
           jnp.zeros((batch, num_new), jnp.float32), zeros,
           jnp.zeros((batch,), jnp.bool_), zeros, zeros, zeros)
  carry = jax.lax.while_loop(
      lambda c: jnp.any(~c[7] & (c[6] < num_new)), round_, carry)
  tokens, log_probs, count = carry[4], carry[5], carry[6]
  accepted, drafted, calls = carry[8:]
  return SpeculativeDecoded(
      tokens=jnp.where(valid[:, None], tokens, _INVALID_ID),
      lengths=jnp.where(valid, count, _INVALID_ID),
      log_probs=jnp.where(valid[:, None], log_probs, jnp.nan),
      accepted=accepted, drafted=drafted, target_calls=calls)
