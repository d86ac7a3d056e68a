"""The autoregressive decode loop: one ``lax.while_loop`` over any step function.

Contract (docs/autoregressive.md)::

  step_fn(state, tokens[B] int32, positions[B] int32) -> (logits[B, V] float32, state)
  prefill_fn(state, prompt[B, P], prompt_lengths[B]) -> (last_logits[B, V], state)

Row i's sequence is prompt[i, :prompt_lengths[i]] followed by the generated
tokens; the token fed at position t yields the logits of position t + 1.

* Without ``prefill_fn`` the prompt goes through ``step_fn`` token by token at
  positions 0..len_i - 1, all rows in step: at loop step t every live row is
  fed its position t, and a row starts generating as soon as its own prompt
  ends (shorter prompts start earlier; no left padding). So any model runs,
  a stateless one included (a Markov chain: ``step_fn`` returns table[tokens]).
* With ``prefill_fn`` its logits give generated token 0 of every row; then row
  i is fed its n-th generated token at position len_i + n.

A finished row is fed ``pad_token`` at a frozen position; the positions fed are
always < P + max_new_tokens, and the loop exits when every row has finished.

Each generated token is drawn from softmax(filter_logits(logits)), the filters
of ``research.autoregressive.filters`` in their fixed order (repetition
penalty, temperature, top-k, top-p, min-p), by Gumbel-max (Gumbel 1954;
Maddison et al. 2014): exact for that truncated distribution, whose
log-probability of the drawn token is returned. Row i's n-th generated token
uses the noise of fold_in(fold_in(key, n), i), so a row's result does not depend
on the other rows (their prompts, settings or number).

Every control is a scalar or a per-row [B] array passed as data (changing
values never recompiles); temperature = 0 is greedy, top_k = 0, top_p = 1,
min_p = 0 and repetition_penalty = 1 switch their filter off. ``max_new_tokens``
is static (it is a shape).

Checks under ``jit`` (docs/library.md): concrete invalid values raise
ValueError naming the argument; shapes are always checked. A traced invalid
value (which has no value to test) makes the affected rows' tokens and lengths
-1 and log_probs NaN (a traced bad stop token: every row), and is a
``checkify.debug_check``.

Beam search: ``research.autoregressive.beam``; speculative sampling:
``research.autoregressive.speculative``.
"""
import functools
import typing

import jax
import jax.numpy as jnp

from research.autoregressive import arguments, filters
from research.sampling import discrete

_INVALID_ID = -1


class Decoded(typing.NamedTuple):
  """Output of ``decode``.

  tokens: [B, max_new_tokens] int32; after row i's first stop token, pad_token.
  lengths: [B] int32, generated tokens up to and including the first stop token
    (max_new_tokens if none).
  log_probs: [B, max_new_tokens] float32, log-probability of each drawn token
    under the truncated renormalised distribution it was drawn from (0 after
    the stop, 0 for greedy tokens).
  """
  tokens: jax.Array
  lengths: jax.Array
  log_probs: jax.Array


_fail = functools.partial(arguments.fail, "decode")
_per_row = functools.partial(arguments.per_row, "decode")


def _vocab_size(step_fn, prefill_fn, state, prompt, lengths):
  """V from the output shapes of step_fn (and prefill_fn); ValueError if wrong."""
  batch = prompt.shape[0]
  ids = jax.ShapeDtypeStruct((batch,), jnp.int32)
  outputs = [("step_fn", jax.eval_shape(step_fn, state, ids, ids))]
  if prefill_fn is not None:
    outputs.append(("prefill_fn", jax.eval_shape(prefill_fn, state, prompt,
                                                 lengths)))
  sizes = set()
  for name, out in outputs:
    logits = out[0]
    if len(logits.shape) != 2 or logits.shape[0] != batch or logits.shape[1] < 1:
      raise ValueError(f"decode: {name} must return logits of shape ({batch}, V),"
                       f" got shape {logits.shape}")
    sizes.add(logits.shape[1])
  if len(sizes) != 1:
    raise ValueError(f"decode: step_fn and prefill_fn return different "
                     f"vocabulary sizes {sorted(sizes)}")
  return sizes.pop()


_stop_array = functools.partial(arguments.stop_array, "decode")


def decode(key, step_fn, state, prompt, prompt_lengths, *, max_new_tokens,
           temperature=1.0, top_k=0, top_p=1.0, min_p=0.0,
           repetition_penalty=1.0, stop_tokens=(), pad_token=0,
           prefill_fn=None):
  """Sample max_new_tokens continuations of each prompt row (module docstring).

  Args:
    key: PRNG key.
    step_fn: (state, tokens[B], positions[B]) -> (logits[B, V], state).
    state: the model state (any pytree; its structure must not change).
    prompt: [B, P] int token ids; entries past a row's length are ignored.
    prompt_lengths: [B] ints in [1, P].
    max_new_tokens: static int >= 1.
    temperature: T >= 0 (0: greedy), scalar or [B].
    top_k: int in [0, V] (0: off), scalar or [B].
    top_p: in (0, 1] (1: off), scalar or [B].
    min_p: in [0, 1) (0: off), scalar or [B].
    repetition_penalty: > 0 (1: off), scalar or [B].
    stop_tokens: token ids in [0, V) ending a row (included in its output).
    pad_token: int written after a row's stop token and fed to finished rows.
    prefill_fn: optional (state, prompt, prompt_lengths) -> (last_logits, state).

  Returns:
    Decoded(tokens [B, max_new_tokens], lengths [B], log_probs [B, max_new_tokens]).
  """
  prompt = arguments.prompt_array("decode", prompt)
  batch, width = prompt.shape
  num_new = arguments.positive_static("decode", "max_new_tokens", max_new_tokens)
  arguments.pad_scalar("decode", pad_token)
  lengths, len_ok = arguments.prompt_lengths("decode", prompt_lengths, batch, width)
  vocab = _vocab_size(step_fn, prefill_fn, state, prompt, lengths)
  arguments.prompt_tokens("decode", prompt, lengths, len_ok, vocab)
  controls, (t_ok, k_ok, p_ok, m_ok) = arguments.filter_controls(
      "decode", batch, vocab, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
  temp, k, p, m = (controls[n] for n in ("temperature", "top_k", "top_p", "min_p"))
  r, r_ok = _per_row(repetition_penalty, "repetition_penalty", batch, False,
                     lambda r: r > 0, "> 0 (1 is off)")
  stop, stop_ok = _stop_array(stop_tokens, vocab)
  valid = jnp.ones((batch,), jnp.bool_)
  for ok in (len_ok, t_ok, k_ok, p_ok, m_ok, r_ok, stop_ok):
    if ok is not None:
      valid = valid & ok
  lengths = jnp.clip(lengths, 1, width)
  pad = jnp.asarray(pad_token, jnp.int32)
  rows = jnp.arange(batch)
  in_prompt = jnp.arange(width)[None] < lengths[:, None]
  seen = jnp.any(jax.nn.one_hot(prompt, vocab, dtype=jnp.bool_)
                 & in_prompt[..., None], axis=1)

  def update(carry, logits, pred_pos):
    """Draw the token of position pred_pos for rows past their prompt."""
    (state, feed_tok, feed_pos, tokens, log_probs, count, stopped, seen) = carry
    was_done = stopped | (count >= num_new)
    active = (pred_pos >= lengths) & ~was_done
    filtered = filters.filter_logits(logits, seen, temperature=temp, top_k=k,
                                     top_p=p, min_p=m, repetition_penalty=r)
    row_keys = jax.vmap(lambda n, i: jax.random.fold_in(
        jax.random.fold_in(key, n), i))(count, rows)
    noise = jax.vmap(lambda kk: discrete.gumbel_noise(kk, (vocab,)))(row_keys)
    drawn = jnp.argmax(filtered + noise, axis=-1).astype(jnp.int32)
    logp = jnp.take_along_axis(jax.nn.log_softmax(filtered, axis=-1),
                               drawn[:, None], axis=-1)[:, 0]
    write = active[:, None] & (jnp.arange(num_new)[None] == count[:, None])
    tokens = jnp.where(write, drawn[:, None], tokens)
    log_probs = jnp.where(write, logp[:, None], log_probs)
    seen = seen | (active[:, None] & jax.nn.one_hot(drawn, vocab,
                                                    dtype=jnp.bool_))
    stopped = stopped | (active & jnp.isin(drawn, stop))
    count = count + active.astype(jnp.int32)
    from_prompt = prompt[rows, jnp.minimum(pred_pos, width - 1)]
    next_tok = jnp.where(pred_pos < lengths, from_prompt, drawn)
    feed_tok = jnp.where(was_done, pad, next_tok)
    feed_pos = jnp.where(was_done, feed_pos, pred_pos)
    return (state, feed_tok, feed_pos, tokens, log_probs, count, stopped, seen)

  def body(carry):
    state, feed_tok, feed_pos = carry[:3]
    logits, state = step_fn(state, feed_tok, feed_pos)
    return update((state,) + carry[1:], logits, feed_pos + 1)

  def running(carry):
    count, stopped = carry[5], carry[6]
    return ~jnp.all(stopped | (count >= num_new))

  zeros = jnp.zeros((batch,), jnp.int32)
  carry = (state, prompt[:, 0], zeros, jnp.full((batch, num_new), pad),
           jnp.zeros((batch, num_new), jnp.float32), zeros,
           jnp.zeros((batch,), jnp.bool_), seen)
  if prefill_fn is not None:
    logits, state = prefill_fn(state, prompt, lengths)
    carry = update((state, carry[1], lengths - 1) + carry[3:], logits, lengths)
  carry = jax.lax.while_loop(running, body, carry)
  tokens, log_probs, count = carry[3], carry[4], carry[5]
  return Decoded(tokens=jnp.where(valid[:, None], tokens, _INVALID_ID),
                 lengths=jnp.where(valid, count, _INVALID_ID),
                 log_probs=jnp.where(valid[:, None], log_probs, jnp.nan))
