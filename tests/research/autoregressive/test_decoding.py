"""Tests for research.autoregressive (fixed keys; chi-square p > 1e-3, N = 20000)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from research.autoregressive import filters
from research.autoregressive.decoding import Decoded, decode

N = 20_000
P_MIN = 1e-3          # chi-square p-value threshold (fixed keys: deterministic)
V = 6
NEG_INF = -np.inf


def _table():
  """Markov transition logits [V, V]: a tie in row 2, a -inf in rows 2 and 4."""
  rng = np.random.default_rng(0)
  table = rng.normal(size=(V, V)) * 1.5
  table[2, 3] = table[2, 1]
  table[2, 5] = NEG_INF
  table[4, 0] = NEG_INF
  return table.astype(np.float32)


TABLE = _table()


def markov_step(state, tokens, positions):
  del positions
  return jnp.asarray(TABLE)[tokens], state


def markov_prefill(state, prompt, prompt_lengths):
  last = prompt[jnp.arange(prompt.shape[0]), prompt_lengths - 1]
  return jnp.asarray(TABLE)[last], state


def reference_probs(logits, seen, temperature=1., top_k=0, top_p=1., min_p=0.,
                    repetition_penalty=1.):
  """The truncated distribution in float64 NumPy, written from the definitions."""
  l = np.asarray(logits, np.float64).copy()
  seen = np.asarray(seen, bool)
  r = repetition_penalty
  l[seen] = np.where(l[seen] > 0, l[seen] / r, l[seen] * r)
  if temperature == 0:
    out = np.full_like(l, NEG_INF)
    out[np.argmax(l)] = 0.
    return np.exp(out)
  l = l / temperature
  order = np.argsort(-l, kind="stable")
  if top_k:
    l[order[top_k:]] = NEG_INF
  q = np.exp(l - l.max()); q /= q.sum()
  if top_p < 1:
    before = np.concatenate([[0.], np.cumsum(q[order])[:-1]])
    drop = order[(before >= top_p) & (np.arange(l.size) > 0)]
    l[drop] = NEG_INF
  q = np.exp(l - l.max()); q /= q.sum()
  l[q < min_p * q.max()] = NEG_INF
  q = np.exp(l - l.max())
  return q / q.sum()


def _chi2_pvalue(samples, probs):
  probs = np.asarray(probs, np.float64).ravel()
  counts = np.bincount(np.asarray(samples).ravel(), minlength=probs.size)
  assert np.all(counts[probs == 0] == 0), "drew a token outside the truncation"
  support = probs > 0
  if support.sum() == 1:
    return 1.
  expected = probs[support] / probs[support].sum() * counts.sum()
  return stats.chisquare(counts[support], expected).pvalue


def _seen(*tokens):
  s = np.zeros(V, bool)
  s[list(tokens)] = True
  return s


# ------------------------------------------------------------------ filters
def test_repetition_penalty_divides_positive_multiplies_negative():
  out = filters.apply_repetition_penalty(
      jnp.array([[2., -2., 1., NEG_INF]]), jnp.array([[True, True, False, True]]),
      jnp.array([2.]))
  np.testing.assert_array_equal(out, [[1., -4., 1., NEG_INF]])


def test_top_p_keeps_the_token_that_crosses_p():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.2]]))
  kept = np.isfinite(filters.top_p_filter(logits, jnp.array([0.6])))
  np.testing.assert_array_equal(kept, [[True, True, False]])
  kept = np.isfinite(filters.top_p_filter(logits, jnp.array([0.4])))
  np.testing.assert_array_equal(kept, [[True, False, False]])


def test_top_p_cumulative_sum_exactly_p_keeps_no_extra_token():
  # Uniform logits: q = 0.25 exactly, cumsum exactly 0.5 after two tokens.
  logits = jnp.zeros((3, 4))
  out = filters.top_p_filter(logits, jnp.array([0.5, 0.75, 0.25]))
  np.testing.assert_array_equal(np.isfinite(out).sum(-1), [2, 3, 1])
  np.testing.assert_array_equal(np.isfinite(out)[0], [True, True, False, False])
  d = decode(jax.random.key(0), lambda s, t, p: (jnp.zeros((t.shape[0], 4)), s),
             (), jnp.zeros((N, 1), jnp.int32), jnp.ones(N, jnp.int32),
             max_new_tokens=1, top_p=0.5)
  assert set(np.unique(d.tokens)) == {0, 1}
  np.testing.assert_allclose(d.log_probs, np.log(0.5), atol=1e-6)


def test_top_p_one_keeps_everything_even_when_cumsum_rounds_to_one():
  logits = jnp.array([[20., 0., 0., NEG_INF], [1., 0.5, 0., -1.]])
  out = filters.top_p_filter(logits, jnp.array([1., 0.99]))
  np.testing.assert_array_equal(np.isfinite(out),
                                [[True, True, True, False], [True] * 4])
  # The float32 cumsum is already 1 after the first token of row 0.
  assert float(jax.nn.softmax(logits[0])[0]) == 1.


@pytest.mark.parametrize("vocab", [3, 7, 10, 33, 100])
def test_top_p_never_nan_when_cumsum_never_reaches_p(vocab):
  p = np.nextafter(np.float32(1), np.float32(0))
  logits = jax.random.normal(jax.random.key(vocab), (4, vocab))
  logits = logits.at[:, 0].set(NEG_INF)
  out = np.asarray(filters.top_p_filter(logits, jnp.full((4,), p)))
  assert not np.any(np.isnan(out))
  assert np.all(out[:, 0] == NEG_INF) and np.all(np.isfinite(out).sum(-1) >= 1)
  probs = np.asarray(jax.nn.softmax(out, axis=-1))
  assert np.all(np.isfinite(probs))


def test_ties_and_neg_inf_top_k_temperature_zero():
  logits = jnp.array([[1., 1., NEG_INF, 1., 0.]])
  kept = np.isfinite(filters.top_k_filter(logits, jnp.array([2])))
  np.testing.assert_array_equal(kept, [[True, True, False, False, False]])
  kept = np.isfinite(filters.apply_temperature(logits, jnp.array([0.])))
  np.testing.assert_array_equal(kept, [[True, False, False, False, False]])
  kept = np.isfinite(filters.top_p_filter(logits, jnp.array([0.5])))
  np.testing.assert_array_equal(kept, [[True, True, False, False, False]])


def test_min_p_relative_to_largest():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  kept = np.isfinite(filters.min_p_filter(logits, jnp.array([0.2])))
  np.testing.assert_array_equal(kept, [[True, True, True, False]])
  assert np.isfinite(filters.min_p_filter(logits, jnp.array([0.]))).all()


# ------------------------------------------------------------------ statistics
SETTINGS = [  # temperature, top_k, top_p, min_p, repetition_penalty
    (1.0, 0, 1.0, 0.0, 1.0),
    (0.7, 4, 1.0, 0.0, 1.0),
    (1.3, 0, 0.8, 0.0, 1.0),
    (1.0, 0, 1.0, 0.1, 1.0),
    (0.9, 5, 0.9, 0.05, 1.5),
    (1.0, 0, 1.0, 0.0, 2.5),
    (2.0, 3, 0.7, 0.2, 0.8),
]
CASES = [((0, 2), s) for s in SETTINGS] + [  # prompt [3, 0]: seen positive logits
    ((3, 0), (1.0, 0, 1.0, 0.0, 2.5)), ((3, 0), (0.8, 0, 0.9, 0.0, 1.5))]


@pytest.fixture(scope="module")
def first_token_run():
  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(key, prompt_row, temperature, top_k, top_p, min_p, penalty):
    prompt = jnp.tile(prompt_row[None], (N, 1))
    return decode(key, markov_step, (), prompt, jnp.full((N,), 2), max_new_tokens=1,
                  temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                  repetition_penalty=penalty)
  return run


@pytest.mark.parametrize("prompt,setting", CASES)
def test_first_token_matches_exact_truncated_distribution(first_token_run, prompt,
                                                          setting):
  d = first_token_run(jax.random.key(11), jnp.array(prompt, jnp.int32), *setting)
  exact = reference_probs(TABLE[prompt[1]], _seen(*prompt), *setting)
  tokens = np.asarray(d.tokens[:, 0])
  assert _chi2_pvalue(tokens, exact) > P_MIN
  np.testing.assert_allclose(d.log_probs[:, 0], np.log(exact[tokens]), atol=2e-5)
  np.testing.assert_array_equal(d.lengths, 1)


def test_two_token_joint_distribution_with_penalty():
  setting = (1.0, 0, 0.9, 0.0, 1.8)
  prompt = jnp.tile(jnp.array([[1, 3]], jnp.int32), (N, 1))
  d = jax.jit(lambda k: decode(k, markov_step, (), prompt, jnp.full((N,), 2),
                               max_new_tokens=2, temperature=1.0, top_p=0.9,
                               repetition_penalty=1.8))(jax.random.key(12))
  first = reference_probs(TABLE[3], _seen(1, 3), *setting)
  joint = np.zeros((V, V))
  for a in range(V):
    if first[a] > 0:
      joint[a] = first[a] * reference_probs(TABLE[a], _seen(1, 3, a), *setting)
  tokens = np.asarray(d.tokens)
  assert _chi2_pvalue(tokens[:, 0] * V + tokens[:, 1], joint) > P_MIN
  exact_lp = np.log(joint[tokens[:, 0], tokens[:, 1]])
  np.testing.assert_allclose(d.log_probs.sum(-1), exact_lp, atol=5e-5)


def test_greedy_equals_argmax_chain_with_and_without_penalty():
  prompt = jnp.array([[0, 5], [3, 0], [4, 4]], jnp.int32)
  lengths = jnp.array([2, 1, 2])
  for penalty in (1.0, 1.7):
    d = decode(jax.random.key(1), markov_step, (), prompt, lengths,
               max_new_tokens=7, temperature=0., top_p=0.3, min_p=0.5,
               repetition_penalty=penalty)
    for row in range(3):
      seq = list(np.asarray(prompt[row, :lengths[row]]))
      for _ in range(7):
        seq.append(int(np.argmax(reference_probs(TABLE[seq[-1]], _seen(*seq),
                                                 repetition_penalty=penalty))))
      np.testing.assert_array_equal(d.tokens[row], seq[-7:])
    np.testing.assert_array_equal(d.log_probs, 0.)


# ------------------------------------------------------------------ the loop
def _hash_step(state, tokens, positions):
  """Stateful model: h' = (3h + token + position) mod V; logits 4 * one_hot(h')."""
  state = (3 * state + tokens + positions) % V
  return 4. * jax.nn.one_hot(state, V), state


def _hash_prefill(state, prompt, lengths):
  for t in range(prompt.shape[1]):
    state = jnp.where(t < lengths, (3 * state + prompt[:, t] + t) % V, state)
  return 4. * jax.nn.one_hot(state, V), state


@pytest.mark.parametrize("prefill_fn", [None, _hash_prefill])
def test_state_positions_and_mixed_prompt_lengths(prefill_fn):
  prompt = jnp.array([[1, 2, 3, 4], [5, 9, 9, 9], [0, 4, 9, 9]], jnp.int32)
  lengths = jnp.array([4, 1, 2])
  prompt = prompt % V if prefill_fn is None else jnp.minimum(prompt, V - 1)
  d = decode(jax.random.key(0), _hash_step, jnp.zeros(3, jnp.int32), prompt,
             lengths, max_new_tokens=5, temperature=0., prefill_fn=prefill_fn)
  for row in range(3):
    h, seq = 0, list(np.asarray(prompt[row, :lengths[row]]))
    for pos, tok in enumerate(seq):
      h = (3 * h + tok + pos) % V
    out = []
    for n in range(5):
      out.append(h)
      h = (3 * h + h + len(seq) + n) % V
    np.testing.assert_array_equal(d.tokens[row], out)


def test_prefill_gives_the_same_samples_as_token_by_token():
  prompt = jnp.array([[0, 2, 1], [3, 3, 0], [5, 1, 1]], jnp.int32)
  lengths = jnp.array([3, 1, 2])
  kwargs = dict(max_new_tokens=6, temperature=jnp.array([1., 0.8, 1.2]),
                top_k=4, top_p=0.95, repetition_penalty=1.3, stop_tokens=(4,))
  a = decode(jax.random.key(3), markov_step, (), prompt, lengths, **kwargs)
  b = decode(jax.random.key(3), markov_step, (), prompt, lengths,
             prefill_fn=markov_prefill, **kwargs)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def test_stops_pad_and_lengths():
  stop = (1, 4)
  d = decode(jax.random.key(5), markov_step, (), jnp.zeros((500, 1), jnp.int32),
             jnp.ones(500, jnp.int32), max_new_tokens=8, stop_tokens=stop,
             pad_token=-7)
  tokens, lengths, lp = map(np.asarray, d)
  for row in range(500):
    hits = np.flatnonzero(np.isin(tokens[row], stop))
    length = hits[0] + 1 if hits.size else 8
    assert lengths[row] == length
    assert np.all(tokens[row, length:] == -7) and np.all(lp[row, length:] == 0)
    assert np.all(tokens[row, :length] >= 0) and np.all(lp[row, :length] <= 0)
  assert 0 < np.mean(lengths == 8) < 1 and np.any(lengths == 1)


@pytest.mark.parametrize("prefill_fn,calls", [(None, (2, 10)), (markov_prefill, (1, 9))])
def test_loop_exits_when_every_row_has_stopped(prefill_fn, calls):
  table = np.full((V, V), -10., np.float32)
  table[0, 1] = table[1, 5] = table[5, 5] = 0.
  counter = []

  def step(state, tokens, positions):
    jax.debug.callback(lambda p: counter.append(1), positions)
    return jnp.asarray(table)[tokens], state

  prefill = None if prefill_fn is None else (
      lambda s, pr, n: (jnp.asarray(table)[pr[:, 0]], s))
  for stop, expected in zip(((5,), ()), calls):
    counter.clear()
    d = decode(jax.random.key(0), step, (), jnp.zeros((2, 1), jnp.int32),
               jnp.ones(2, jnp.int32), max_new_tokens=10, temperature=0.,
               stop_tokens=stop, prefill_fn=prefill)
    jax.effects_barrier()
    assert len(counter) == expected
  np.testing.assert_array_equal(d.tokens[0], [1, 5] + [5] * 8)


def test_row_result_independent_of_other_rows():
  kwargs = dict(max_new_tokens=6, stop_tokens=(3,))
  row = dict(temperature=0.9, top_k=4, top_p=0.9, min_p=0.05, repetition_penalty=1.3)
  alone = decode(jax.random.key(8), markov_step, (), jnp.array([[0, 2]]),
                 jnp.array([2]), **row, **kwargs)
  prompt = jnp.array([[0, 2, 5, 5, 5], [1, 1, 1, 1, 1], [4, 0, 0, 0, 0], [2, 2, 2, 3, 1]])
  others = lambda name, v: jnp.array([row[name], *v], jnp.float32)
  batch = decode(jax.random.key(8), markov_step, (), prompt, jnp.array([2, 5, 1, 3]),
                 temperature=others("temperature", [0., 2., 1.]),
                 top_k=jnp.array([4, 0, 2, 6]),
                 top_p=others("top_p", [1., 0.5, 0.99]),
                 min_p=others("min_p", [0., 0.3, 0.]),
                 repetition_penalty=others("repetition_penalty", [1., 2., 0.5]),
                 **kwargs)
  for x, y in zip(alone, batch):
    np.testing.assert_array_equal(x[0], y[0])


def test_controls_are_data_no_recompile_and_jit_matches_eager():
  prompt = jnp.array([[0, 2], [3, 1], [5, 5]], jnp.int32)
  lengths = jnp.array([2, 1, 2])

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(key, temperature, top_k, top_p, min_p, penalty, stop, pad):
    return decode(key, markov_step, (), prompt, lengths, max_new_tokens=5,
                  temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                  repetition_penalty=penalty, stop_tokens=stop, pad_token=pad)

  settings = [
      (jnp.array([1., 0., 0.5]), jnp.array([0, 3, 6]), jnp.array([1., 0.9, 0.5]),
       jnp.array([0., 0.1, 0.]), jnp.array([1., 1.2, 0.7]), jnp.array([4, 1]), -1),
      (jnp.array([0., 2., 1.]), jnp.array([2, 0, 1]), jnp.array([0.3, 1., 1.]),
       jnp.array([0.5, 0., 0.9]), jnp.array([3., 1., 1.]), jnp.array([0, 5]), 9),
  ]
  for i, s in enumerate(settings):
    jitted = run(jax.random.key(i), *s)
    eager = decode(jax.random.key(i), markov_step, (), prompt, lengths,
                   max_new_tokens=5, temperature=s[0], top_k=s[1], top_p=s[2],
                   min_p=s[3], repetition_penalty=s[4], stop_tokens=s[5],
                   pad_token=s[6])
    np.testing.assert_array_equal(jitted.tokens, eager.tokens)
    np.testing.assert_array_equal(jitted.lengths, eager.lengths)
    np.testing.assert_allclose(jitted.log_probs, eager.log_probs, atol=1e-6)


def test_vmap_over_keys_matches_per_key_calls():
  prompt, lengths = jnp.array([[0, 2], [4, 1]]), jnp.array([2, 1])
  f = lambda k: decode(k, markov_step, (), prompt, lengths, max_new_tokens=4,
                       top_p=0.9, repetition_penalty=1.2, stop_tokens=(3,))
  keys = jax.random.split(jax.random.key(4), 3)
  batched = jax.vmap(f)(keys)
  for i in range(3):
    single = f(keys[i])
    for x, y in zip(batched, single):
      np.testing.assert_allclose(x[i], y, atol=1e-6)


def test_traced_invalid_control_marks_only_its_row():
  prompt, lengths = jnp.array([[0, 2], [4, 1]]), jnp.array([2, 1])
  d = jax.jit(lambda p: decode(jax.random.key(0), markov_step, (), prompt, lengths,
                               max_new_tokens=3, top_p=p))(jnp.array([1.5, 0.9]))
  assert isinstance(d, Decoded)
  np.testing.assert_array_equal(d.tokens[0], -1)
  assert d.lengths[0] == -1 and np.all(np.isnan(d.log_probs[0]))
  assert np.all(np.asarray(d.tokens[1]) >= 0)


BAD = [
    (dict(top_p=0.), "top_p"), (dict(top_p=1.5), "top_p"),
    (dict(temperature=-0.1), "temperature"), (dict(top_k=V + 1), "top_k"),
    (dict(top_k=-1), "top_k"), (dict(top_k=2.5), "top_k"),
    (dict(min_p=1.), "min_p"), (dict(min_p=-0.1), "min_p"),
    (dict(repetition_penalty=0.), "repetition_penalty"),
    (dict(stop_tokens=(V,)), "stop_tokens"), (dict(stop_tokens=(-1,)), "stop_tokens"),
    (dict(temperature=jnp.ones(3)), "temperature"), (dict(top_p=jnp.ones((2, 2))), "top_p"),
    (dict(prompt_lengths=jnp.array([3, 1])), "prompt_lengths"),
    (dict(prompt_lengths=jnp.array([0, 1])), "prompt_lengths"),
    (dict(prompt_lengths=jnp.array([1, 1, 1])), "prompt_lengths"),
    (dict(max_new_tokens=0), "max_new_tokens"), (dict(max_new_tokens=2.), "max_new_tokens"),
    (dict(prompt=jnp.array([[0, V], [1, 1]])), "prompt"),
    (dict(prompt=jnp.zeros((2,), jnp.int32)), "prompt"),
]


@pytest.mark.parametrize("kwargs,name", BAD)
def test_bad_input_raises_naming_the_argument(kwargs, name):
  args = dict(prompt=jnp.zeros((2, 2), jnp.int32), prompt_lengths=jnp.array([2, 1]),
              max_new_tokens=3)
  args.update(kwargs)
  with pytest.raises(ValueError, match=name):
    decode(jax.random.key(0), markov_step, (), **args)
