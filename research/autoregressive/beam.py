"""Beam search over any step function: one ``lax.while_loop``, beams as rows.

Contract (that of ``research.autoregressive.decoding.decode``, docs/autoregressive.md)::

  step_fn(state, tokens[B'] int32, positions[B'] int32) -> (logits[B', V], state)
  prefill_fn(state, prompt[B', P], prompt_lengths[B']) -> (last_logits[B', V], state)

with B' = B * num_beams: beam j of prompt row b is state row b * num_beams + j,
so the caller builds the state for B' rows (a transformer: ``init_cache(B *
num_beams, ...)``) and ``prefill_fn`` gets the prompt with each row repeated
num_beams times. After each step the state is reordered by the beams' parents,
``jnp.take(leaf, rows, axis)`` on every array leaf along its batch axis: with
``state_batch_axis=None`` that is the leaf's one axis of size B' (the
``KVCache`` [num_layers, B', max_len, heads, head_dim]: axis 1); a leaf with no
such axis is shared by all rows and left as it is; a leaf with several is a
ValueError (pass ``state_batch_axis``, an int used for every array leaf).

Each hypothesis y = (y_1..y_L) of a row is scored as in Hugging Face
``generate`` (its ``length_penalty``; not GNMT's ((5 + L) / 6)^alpha, Wu et al.
2016)::

  score(y) = sum_t log softmax(logits_t)[y_t] / L ** length_penalty

L counting the generated tokens, the stop token included; length_penalty > 0
favours longer, < 0 shorter hypotheses, 0 is the plain sum. The model's
log-probabilities are used as they are (no temperature or truncation).

One expansion (Graves 2012; Sutskever et al. 2014): the num_beams * V
continuations of the live beams are split into finished ones (a stop token, or
length max_new_tokens) and open ones; the best num_beams finished, by score,
merge into the row's pool of num_beams finished hypotheses (existing entries
win ties), the best num_beams open ones, by summed log-probability, become the
live beams. At the start only beam 0 is live (the others have log-probability
-inf), so the first expansion picks num_beams distinct tokens. Unlike HF, which
pools only stop tokens among the best 2 * num_beams candidates, every finished
candidate competes for the pool; so with stop tokens num_beams = 1 is not
greedy decoding (it may return a better-scoring hypothesis), without them it is.

A row stops when no live beam can still beat the worst hypothesis in its pool
(HF's ``early_stopping="never"``): a live beam with summed log-probability
c <= 0 and length n can reach at most c / m ** length_penalty, m =
max_new_tokens if length_penalty > 0, else n + 1, so the early exit returns
exactly what running every row to max_new_tokens would. The loop exits when
every row has stopped. A pool slot with no hypothesis of finite probability
(fewer than num_beams exist) has score and log-probability -inf, length 0.

Prompts as in ``decode``: token by token at positions 0..len_i - 1, or with
``prefill_fn``; a row's beams are fed token n at position len_i + n, a stopped
row ``pad_token`` at a frozen position; positions fed are < P + max_new_tokens.
Concrete invalid values raise ValueError naming the argument; a traced invalid
one gives its rows tokens and lengths -1, scores and log_probs NaN.
"""
import functools
import typing

import jax
import jax.numpy as jnp
import numpy as np

from research.autoregressive import arguments

_INVALID_ID = -1


class Beams(typing.NamedTuple):
  """Output of ``beam_search``, each row's hypotheses sorted best first.

  tokens: [B, num_beams, max_new_tokens] int32, pad_token past each length.
  lengths: [B, num_beams] int32, generated tokens, the stop token included.
  scores: [B, num_beams] float32, log_probs / lengths ** length_penalty.
  log_probs: [B, num_beams] float32, summed log-probabilities of the tokens.
  """
  tokens: jax.Array
  lengths: jax.Array
  scores: jax.Array
  log_probs: jax.Array


_fail = functools.partial(arguments.fail, "beam_search")
_is_int = arguments.is_int
_per_row = functools.partial(arguments.per_row, "beam_search")
_stop_array = functools.partial(arguments.stop_array, "beam_search")


def batch_axes(state, rows, state_batch_axis=None):
  """The batch axis of every leaf of state (None: shared, not reordered).

  state_batch_axis None: each array leaf's one axis of size rows (none: None;
  several: ValueError); an int: that axis of every array leaf, of size rows.
  """
  leaves, treedef = jax.tree.flatten(state)
  axes = []
  for leaf in leaves:
    shape = np.shape(leaf)
    if state_batch_axis is None:
      found = [a for a, size in enumerate(shape) if size == rows]
      if len(found) > 1:
        raise ValueError(
            f"beam_search: state_batch_axis must be given: a state leaf of "
            f"shape {shape} has several axes of size {rows} (batch * "
            f"num_beams)")
      axes.append(found[0] if found else None)
    else:
      axis = state_batch_axis
      if not -len(shape) <= axis < len(shape) or shape[axis] != rows:
        raise ValueError(
            f"beam_search: state_batch_axis = {axis} must be an axis of size "
            f"{rows} (batch * num_beams) of every state leaf, got a leaf of "
            f"shape {shape}")
      axes.append(axis % len(shape))
  return treedef, axes


def reorder(state, treedef, axes, rows):
  """Every state leaf with a batch axis gathered at rows [B'] along it."""
  leaves = jax.tree.leaves(state)
  return jax.tree.unflatten(treedef, [
      leaf if axis is None else jnp.take(leaf, rows, axis=axis)
      for leaf, axis in zip(leaves, axes)])


def beam_search(step_fn, state, prompt, prompt_lengths, *, max_new_tokens,
                num_beams, length_penalty=1.0, stop_tokens=(), pad_token=0,
                prefill_fn=None, state_batch_axis=None):
  """The num_beams best continuations of each prompt row (module docstring).

  Args:
    step_fn: (state, tokens[B'], positions[B']) -> (logits[B', V], state),
      B' = B * num_beams.
    state: the model state for B' rows (beam j of row b is row b * num_beams + j).
    prompt: [B, P] int token ids; entries past a row's length are ignored.
    prompt_lengths: [B] ints in [1, P].
    max_new_tokens: static int >= 1.
    num_beams: static int >= 1.
    length_penalty: finite real, scalar or [B]: score = log_prob / L ** it.
    stop_tokens: token ids in [0, V) ending a hypothesis (included in it).
    pad_token: int written past each hypothesis and fed to stopped rows.
    prefill_fn: optional (state, prompt[B', P], prompt_lengths[B'])
      -> (last_logits[B', V], state).
    state_batch_axis: None (each leaf's axis of size B') or an int.

  Returns:
    Beams(tokens [B, num_beams, max_new_tokens], lengths, scores, log_probs
    [B, num_beams]), best first.
  """
  prompt = arguments.prompt_array("beam_search", prompt)
  batch, width = prompt.shape
  num_new = arguments.positive_static("beam_search", "max_new_tokens", max_new_tokens)
  beams = arguments.positive_static("beam_search", "num_beams", num_beams)
  if state_batch_axis is not None and not _is_int(state_batch_axis):
    _fail("state_batch_axis", "None or an int", state_batch_axis)
  arguments.pad_scalar("beam_search", pad_token)
  rows = batch * beams
  lengths, len_ok = arguments.prompt_lengths("beam_search", prompt_lengths, batch, width)
  alpha, alpha_ok = _per_row(length_penalty, "length_penalty", batch, False,
                             lambda a: abs(a) < np.inf, "a finite real")
  treedef, axes = batch_axes(state, rows, state_batch_axis)
  ids = jax.ShapeDtypeStruct((rows,), jnp.int32)
  shapes = [("step_fn", jax.eval_shape(step_fn, state, ids, ids)[0].shape)]
  if prefill_fn is not None:
    shapes.append(("prefill_fn", jax.eval_shape(
        prefill_fn, state, jax.ShapeDtypeStruct((rows, width), jnp.int32),
        ids)[0].shape))
  for name, shape in shapes:
    if len(shape) != 2 or shape[0] != rows or shape[1] < 1:
      raise ValueError(f"beam_search: {name} must return logits of shape "
                       f"({rows}, V) (batch * num_beams rows), got {shape}")
  if len({shape[1] for _, shape in shapes}) != 1:
    raise ValueError(f"beam_search: step_fn and prefill_fn return different "
                     f"vocabulary sizes {[s[1] for _, s in shapes]}")
  vocab = shapes[0][1][1]
  arguments.prompt_tokens("beam_search", prompt, lengths, len_ok, vocab)
  stop, stop_ok = _stop_array(stop_tokens, vocab)
  valid = jnp.ones((batch,), jnp.bool_)
  for ok in (len_ok, alpha_ok, stop_ok):
    if ok is not None:
      valid = valid & ok
  lengths = jnp.clip(lengths, 1, width)
  alpha = jnp.where(jnp.isfinite(alpha), alpha, 0.)
  pad = jnp.asarray(pad_token, jnp.int32)
  beam_prompt = jnp.repeat(prompt, beams, axis=0)
  beam_lengths = jnp.repeat(lengths, beams)
  is_stop = jnp.any(jnp.arange(vocab)[:, None] == stop[None], axis=1)
  steps = jnp.arange(num_new)
  neg_inf = jnp.float32(-jnp.inf)

  def update(carry, logits, pred_pos):
    """Expand the live beams of rows past their prompt (pred_pos: [B'])."""
    (state, feed_tok, feed_pos, live_tok, live_lp, count, done,
     pool_tok, pool_len, pool_lp, pool_score) = carry
    pred_row = pred_pos.reshape(batch, beams)[:, 0]
    active = (pred_row >= lengths) & ~done
    new_len = (count + 1).astype(jnp.float32)
    cand = live_lp[:, :, None] + jax.nn.log_softmax(
        logits.astype(jnp.float32), axis=-1).reshape(batch, beams, vocab)
    final = is_stop[None, None] | (count + 1 >= num_new)[:, None, None]
    flat = lambda x: x.reshape(batch, beams * vocab)
    open_lp, open_idx = jax.lax.top_k(flat(jnp.where(final, neg_inf, cand)),
                                      beams)
    end_lp, end_idx = jax.lax.top_k(flat(jnp.where(final, cand, neg_inf)),
                                    beams)

    def extend(idx):
      parent, token = idx // vocab, (idx % vocab).astype(jnp.int32)
      hist = jnp.take_along_axis(live_tok, parent[..., None], axis=1)
      at_n = steps[None, None] == count[:, None, None]
      return parent, token, jnp.where(at_n, token[..., None], hist)

    parent, token, open_tok = extend(open_idx)
    _, _, end_tok = extend(end_idx)
    end_score = end_lp / new_len[:, None] ** alpha[:, None]
    merged = jnp.concatenate([pool_score, end_score], axis=1)
    best, pick = jax.lax.top_k(merged, beams)
    take = lambda a, b: jnp.take_along_axis(
        jnp.concatenate([a, b], axis=1),
        pick.reshape(pick.shape + (1,) * (a.ndim - 2)), axis=1)
    end_len = jnp.broadcast_to((count + 1)[:, None], (batch, beams))
    new_pool = (take(pool_tok, end_tok), take(pool_len, end_len),
                take(pool_lp, end_lp), best)
    # The best any live beam can still reach (a sum of log p <= 0 only falls).
    reach = jnp.where(alpha > 0, num_new, jnp.minimum(count + 2, num_new))
    bound = jnp.max(open_lp, axis=1) / reach.astype(jnp.float32) ** alpha
    finished = (count + 1 >= num_new) | (bound <= best[:, -1])
    keep = lambda new, old: jnp.where(
        active.reshape((batch,) + (1,) * (old.ndim - 1)), new, old)
    pool_tok, pool_len, pool_lp, pool_score = (
        keep(n, o) for n, o in zip(new_pool,
                                   (pool_tok, pool_len, pool_lp, pool_score)))
    live_tok, live_lp = keep(open_tok, live_tok), keep(open_lp, live_lp)
    parent = keep(parent, jnp.broadcast_to(jnp.arange(beams), (batch, beams)))
    state = reorder(state, treedef, axes,
                    (parent + beams * jnp.arange(batch)[:, None]).reshape(-1))
    was_done = jnp.repeat(done, beams)
    from_prompt = beam_prompt[jnp.arange(rows),
                              jnp.minimum(pred_pos, width - 1)]
    next_tok = jnp.where(jnp.repeat(active, beams), token.reshape(-1),
                         from_prompt)
    feed_tok = jnp.where(was_done, pad, next_tok)
    feed_pos = jnp.where(was_done, feed_pos, pred_pos)
    done = done | (active & finished)
    count = count + active.astype(jnp.int32)
    return (state, feed_tok, feed_pos, live_tok, live_lp, count, done,
            pool_tok, pool_len, pool_lp, pool_score)

  def body(carry):
    state, feed_tok, feed_pos = carry[:3]
    logits, state = step_fn(state, feed_tok, feed_pos)
    return update((state,) + carry[1:], logits, feed_pos + 1)

  zeros = jnp.zeros((batch,), jnp.int32)
  first = jnp.where(jnp.arange(beams) == 0, 0., neg_inf)
  carry = (state, beam_prompt[:, 0], jnp.zeros((rows,), jnp.int32),
           jnp.full((batch, beams, num_new), pad),
           jnp.broadcast_to(first, (batch, beams)).astype(jnp.float32), zeros,
           jnp.zeros((batch,), jnp.bool_),
           jnp.full((batch, beams, num_new), pad),
           jnp.zeros((batch, beams), jnp.int32),
           jnp.full((batch, beams), neg_inf), jnp.full((batch, beams), neg_inf))
  if prefill_fn is not None:
    logits, state = prefill_fn(state, beam_prompt, beam_lengths)
    carry = update((state, carry[1], beam_lengths - 1) + carry[3:], logits,
                   beam_lengths)
  carry = jax.lax.while_loop(lambda c: ~jnp.all(c[6]), body, carry)
  pool_tok, pool_len, pool_lp, pool_score = carry[7:]
  empty = pool_score == neg_inf
  pool_len = jnp.where(empty, 0, pool_len)
  past = steps[None, None] >= pool_len[..., None]
  pool_tok = jnp.where(past, pad, pool_tok)
  ok2, ok3 = valid[:, None], valid[:, None, None]
  return Beams(tokens=jnp.where(ok3, pool_tok, _INVALID_ID),
               lengths=jnp.where(ok2, pool_len, _INVALID_ID),
               scores=jnp.where(ok2, pool_score, jnp.nan),
               log_probs=jnp.where(ok2, pool_lp, jnp.nan))
