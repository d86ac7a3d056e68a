"""Tests for research.autoregressive.speculative (fixed keys; chi-square p > 1e-3, N = 20000)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from research.autoregressive import filters
from research.autoregressive.decoding import decode
from research.autoregressive.speculative import (SpeculativeDecoded,
                                                 chunk_from_step,
                                                 speculative_decode)
from research.autoregressive.transformer import TransformerConfig, TransformerLM

N = 20_000
P_MIN = 1e-3
V = 6
START = 2


def _tables():
  rng = np.random.default_rng(0)
  target = rng.normal(size=(V, V)) * 1.5
  target[4, 0] = -np.inf
  close = target + rng.normal(size=(V, V)) * 0.7
  close[4, 0] = 0.
  far = -target
  far[4, 0] = 2.
  cast = lambda t: jnp.asarray(t, jnp.float32)
  return cast(target), cast(close), cast(far)


TARGET, CLOSE, FAR = _tables()


def table_step(table, tokens, positions):
  """A Markov chain whose state is its transition table (so tables are data)."""
  del positions
  return table[tokens], table


TABLE_CHUNK = chunk_from_step(table_step)


def _filtered_probs(table, temperature=1., top_k=0, top_p=1., min_p=0.):
  """softmax(filter_logits(table[s])) for every s, in float64: [V, V]."""
  out = filters.filter_logits(
      table, jnp.zeros((V, V), bool), temperature=jnp.full(V, temperature),
      top_k=jnp.full(V, top_k), top_p=jnp.full(V, top_p),
      min_p=jnp.full(V, min_p), repetition_penalty=jnp.ones(V))
  return np.asarray(jax.nn.softmax(out, axis=-1), np.float64)


def _chi2_pvalue(codes, probs):
  """Goodness of fit of codes to probs, cells with expected < 5 pooled."""
  probs = np.asarray(probs, np.float64).ravel()
  probs = probs / probs.sum()
  counts = np.bincount(np.asarray(codes).ravel(), minlength=probs.size)
  assert np.all(counts[probs == 0] == 0), "drew a sequence of probability 0"
  expected = probs * counts.sum()
  small = expected < 5
  obs = np.append(counts[~small], counts[small].sum())
  exp = np.append(expected[~small], expected[small].sum())
  keep = exp > 0
  return stats.chisquare(obs[keep], exp[keep]).pvalue


@functools.partial(jax.jit, static_argnames=("num_new", "num_draft"))
def _markov_run(key, target, draft, prompt, lengths, controls, *, num_new,
                num_draft):
  return speculative_decode(key, TABLE_CHUNK, target, table_step, draft,
                            prompt, lengths, max_new_tokens=num_new,
                            num_draft=num_draft, **controls)


CONTROLS = dict(temperature=1., top_k=0, top_p=1., min_p=0.)


@pytest.mark.parametrize("draft, controls, seed", [
    ("close", {}, 0),
    ("close", dict(temperature=0.7, top_p=0.8), 1),
    ("close", dict(top_k=4, min_p=0.1), 2),
    ("far", {}, 3),
    ("same", dict(temperature=0.7, top_p=0.8), 4),
])
def test_joint_of_three_tokens_is_the_targets(draft, controls, seed):
  """K = 2 draft tokens a round, 3 generated: the tokens span rounds."""
  drafts = dict(close=CLOSE, far=FAR, same=TARGET)
  ctl = dict(CONTROLS, **controls)
  prompt = jnp.full((N, 1), START, jnp.int32)
  out = _markov_run(jax.random.key(seed), TARGET, drafts[draft], prompt,
                    jnp.ones(N, jnp.int32), ctl, num_new=3, num_draft=2)
  tokens = np.asarray(out.tokens)
  p = _filtered_probs(TARGET, **ctl)
  joint = (p[START][:, None, None] * p[:, :, None] * p[None]).ravel()
  pvalue = _chi2_pvalue(tokens[:, 0] * V * V + tokens[:, 1] * V + tokens[:, 2],
                        joint)
  rate = out.accepted.sum() / out.drafted.sum()
  assert pvalue > P_MIN
  if draft == "close" and not controls:  # power: the draft's joint fails
    q = _filtered_probs(drafts[draft], **ctl)
    q_joint = (q[START][:, None, None] * q[:, :, None] * q[None]).ravel()
    assert _chi2_pvalue(tokens[:, 0] * V * V + tokens[:, 1] * V
                        + tokens[:, 2], np.where(joint > 0, q_joint, 0)) < 1e-6
  np.testing.assert_array_equal(out.lengths, 3)
  np.testing.assert_allclose(out.log_probs, np.log(p[
      np.concatenate([np.full((N, 1), START), tokens[:, :2]], axis=1),
      tokens]), atol=1e-5)
  if draft == "same":
    assert rate == 1.0          # p / q = 1 exactly: every draft is accepted
  elif draft == "far":
    assert rate < 0.3
  else:
    assert 0.3 < rate < 1.


@pytest.mark.parametrize("controls", [{}, dict(temperature=0.7, top_p=0.8)])
def test_acceptance_rate_of_one_step_is_sum_of_min_p_q(controls):
  """One draft token, one round: P(accept) = sum_x min(p(x), q(x)) (Leviathan
  et al. 2023, alpha); tolerance 0.015, about 4 standard errors at N = 20000."""
  ctl = dict(CONTROLS, **controls)
  starts = jnp.arange(N, dtype=jnp.int32) % V
  out = _markov_run(jax.random.key(5), TARGET, CLOSE, starts[:, None],
                    jnp.ones(N, jnp.int32), ctl, num_new=1, num_draft=1)
  p, q = _filtered_probs(TARGET, **ctl), _filtered_probs(CLOSE, **ctl)
  alpha = np.minimum(p, q).sum(axis=1)[np.asarray(starts)]
  rate = float(np.mean(out.accepted))
  assert abs(rate - alpha.mean()) < 0.015
  np.testing.assert_array_equal(out.drafted, 1)
  np.testing.assert_array_equal(out.target_calls, 1)


PROMPT = jnp.array([[1, 3, 5], [0, 0, 0], [4, 2, 0], [5, 5, 1]])
LENGTHS = jnp.array([3, 1, 2, 3])


def _run_9_3(key, draft, temperature, prompt=PROMPT, lengths=LENGTHS, stop=3,
             pad=0):
  """9 tokens, 3 drafts a round, a traced stop token and pad: one compile."""
  ctl = dict(CONTROLS, temperature=temperature,
             stop_tokens=jnp.array([stop]), pad_token=jnp.int32(pad))
  return _markov_run(key, TARGET, draft, prompt, lengths, ctl, num_new=9,
                     num_draft=3)


def test_greedy_is_greedy_decode_of_the_target():
  want = decode(jax.random.key(0), table_step, TARGET, PROMPT, LENGTHS,
                max_new_tokens=9, temperature=0., stop_tokens=(3,))
  assert 0 < np.sum(np.asarray(want.lengths) < 9) < 4   # some rows stop
  for draft in (CLOSE, FAR):
    out = _run_9_3(jax.random.key(1), draft, 0.)
    np.testing.assert_array_equal(out.tokens, want.tokens)
    np.testing.assert_array_equal(out.lengths, want.lengths)
    np.testing.assert_array_equal(out.log_probs, 0.)
    assert np.all(out.drafted == 3 * out.target_calls)
    assert np.all(out.target_calls <= out.lengths)


def test_stops_pad_lengths_and_row_independence():
  out = _run_9_3(jax.random.key(2), CLOSE, 1., pad=1)
  assert isinstance(out, SpeculativeDecoded)
  for i in range(4):
    n, row = int(out.lengths[i]), np.asarray(out.tokens[i])
    assert n == 9 or row[n - 1] == 3
    assert 3 not in row[:n - 1]
    np.testing.assert_array_equal(row[n:], 1)
    np.testing.assert_array_equal(out.log_probs[i, n:], 0.)
    assert np.all(np.asarray(out.log_probs[i, :n]) < 0)
  assert np.any(np.asarray(out.lengths) < 9)
  # Row 0 does not depend on the other rows (noise fold_in by row and count).
  other = _run_9_3(jax.random.key(2), CLOSE, 1., prompt=PROMPT.at[1:].set(5),
                   lengths=jnp.array([3, 2, 3, 1]), pad=1)
  for field in ("tokens", "lengths", "log_probs", "accepted", "target_calls"):
    np.testing.assert_array_equal(getattr(other, field)[0],
                                  getattr(out, field)[0])


# Transformers: the target scores chunks (make_chunk_fn), the draft steps.
TV = 13


@functools.lru_cache(maxsize=None)
def _lm(dim, layers, seed, scale):
  config = TransformerConfig(vocab_size=TV, max_len=24, dim=dim,
                             num_layers=layers, num_heads=4, num_kv_heads=2)
  model = TransformerLM(config)
  params = model.init(jax.random.key(seed))
  params["head"]["kernel"] = params["head"]["kernel"] * scale
  return model, params


def test_chunk_fn_matches_full_pass_and_rejected_slots_are_overwritten():
  model, params = _lm(32, 2, 0, 40.)
  chunk = jax.jit(model.make_chunk_fn(params))
  tokens = jax.random.randint(jax.random.key(1), (2, 9), 0, TV, jnp.int32)
  full = jax.jit(model.apply)(params, tokens)
  pos = lambda a, b: jnp.broadcast_to(jnp.arange(a, b, dtype=jnp.int32),
                                      (2, b - a))
  cache = model.init_cache(2, 12)
  first, cache = chunk(cache, tokens[:, :3], pos(0, 3))
  close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-5)
  close(first, full[:, :3])
  # Junk at positions 3..5 (rejected drafts); the next chunks start at the
  # last kept position, 2, and overwrite them.
  _, cache = chunk(cache, (tokens[:, 3:6] + 5) % TV, pos(3, 6))
  second, cache = chunk(cache, tokens[:, 2:5], pos(2, 5))
  third, _ = chunk(cache, tokens[:, 4:7], pos(4, 7))
  close(second, full[:, 2:5])
  close(third, full[:, 4:7])


def test_transformer_target_and_draft_jitted():
  """Greedy equals decode of the target; at temperature 1 the log_probs are
  the full-pass log-probabilities of the kept tokens (rejected drafts left no
  trace in the caches)."""
  target, t_params = _lm(32, 2, 0, 40.)
  draft, d_params = _lm(16, 1, 1, 40.)
  batch, width, num_new, num_draft = 3, 4, 7, 3
  prompt = jax.random.randint(jax.random.key(2), (batch, width), 1, TV,
                              jnp.int32)
  lengths = jnp.array([4, 1, 3])
  size = width + num_new + num_draft - 1
  run = jax.jit(lambda key, temp: speculative_decode(
      key, target.make_chunk_fn(t_params), target.init_cache(batch, size),
      draft.make_step_fn(d_params), draft.init_cache(batch, size), prompt,
      lengths, max_new_tokens=num_new, num_draft=num_draft, temperature=temp))
  greedy = run(jax.random.key(3), 0.)
  want = decode(jax.random.key(0), target.make_step_fn(t_params),
                target.init_cache(batch, width + num_new), prompt, lengths,
                max_new_tokens=num_new, temperature=0.)
  np.testing.assert_array_equal(greedy.tokens, want.tokens)
  sampled = run(jax.random.key(4), 1.)
  np.testing.assert_array_equal(sampled.lengths, num_new)
  assert int(sampled.accepted.sum()) < int(sampled.drafted.sum())  # rejections
  buf = np.zeros((batch, width + num_new), np.int32)
  for i, n in enumerate(np.asarray(lengths)):
    buf[i, :n] = np.asarray(prompt[i, :n])
    buf[i, n:n + num_new] = np.asarray(sampled.tokens[i])
  logp = np.asarray(jax.nn.log_softmax(
      jax.jit(target.apply)(t_params, jnp.asarray(buf)), axis=-1))
  for i, n in enumerate(np.asarray(lengths)):
    want_lp = logp[i, n - 1 + np.arange(num_new), buf[i, n:n + num_new]]
    np.testing.assert_allclose(sampled.log_probs[i], want_lp, atol=1e-4)


def _wrong_vocab(table, tokens, positions):
  return jnp.zeros((tokens.shape[0], V + 1)), table


def _flat_target(table, tokens, positions):
  return table[tokens[:, 0]], table


@pytest.mark.parametrize("kwargs, name", [
    (dict(num_draft=0), "num_draft"),
    (dict(num_draft=True), "num_draft"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(temperature=-1.), "temperature"),
    (dict(top_p=0.), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_k=V + 1), "top_k"),
    (dict(min_p=1.), "min_p"),
    (dict(temperature=[1., 1., 1.]), "temperature"),
    (dict(stop_tokens=(V,)), "stop_tokens"),
    (dict(pad_token=1.5), "pad_token"),
    (dict(prompt_lengths=[0, 1]), "prompt_lengths"),
    (dict(prompt=[[1, V], [1, 1]]), "prompt"),
    (dict(draft_step_fn=_wrong_vocab), "vocabulary"),
    (dict(target_fn=_flat_target), "target_fn"),
])
def test_bad_input_raises_naming_the_argument(kwargs, name):
  args = dict(target_fn=TABLE_CHUNK, draft_step_fn=table_step,
              prompt=[[1, 2], [3, 4]], prompt_lengths=[2, 1], max_new_tokens=3)
  args.update(kwargs)
  with pytest.raises(ValueError, match=name):
    speculative_decode(jax.random.key(0), args.pop("target_fn"), TARGET,
                       args.pop("draft_step_fn"), CLOSE,
                       jnp.asarray(args.pop("prompt")),
                       args.pop("prompt_lengths"), **args)
