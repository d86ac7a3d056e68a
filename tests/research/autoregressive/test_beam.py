"""Tests for research.autoregressive.beam (exact references on Markov chains)."""
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.autoregressive.beam import Beams, beam_search
from research.autoregressive.decoding import decode
from research.autoregressive.transformer import TransformerConfig, TransformerLM

V = 5
STOP = 4
ATOL = 1e-5


MAX_POS = 10


def _tables():
  """Transition logits [MAX_POS, V, V] by position (so no two different
  sequences tie by permuting the same transitions); token 0 never follows 1."""
  tables = np.random.default_rng(0).normal(size=(MAX_POS, V, V)) * 1.5
  tables[:, 1, 0] = -np.inf
  return tables.astype(np.float32)


TABLES = _tables()
LOGP = np.asarray(jax.nn.log_softmax(jnp.asarray(TABLES), axis=-1), np.float64)


def markov_step(state, tokens, positions):
  return jnp.asarray(TABLES)[positions, tokens], state


def markov_prefill(state, prompt, prompt_lengths):
  last = prompt[jnp.arange(prompt.shape[0]), prompt_lengths - 1]
  return jnp.asarray(TABLES)[prompt_lengths - 1, last], state


def _log_prob(start, pos, seq):
  """log p of seq after token start fed at position pos."""
  prev = (start,) + tuple(seq[:-1])
  return sum(LOGP[pos + t, a, b] for t, (a, b) in enumerate(zip(prev, seq)))


def _ended(seq, stops, num_new):
  return len(seq) == num_new or (len(seq) > 0 and seq[-1] in stops)


def brute_force(start, pos, num_new, alpha, stops):
  """Every hypothesis after token start at pos (cut at its first stop), best first."""
  hyps = set()
  for seq in itertools.product(range(V), repeat=num_new):
    cut = next((i + 1 for i, x in enumerate(seq) if x in stops), num_new)
    hyps.add(seq[:cut])
  out = []
  for seq in hyps:
    lp = _log_prob(start, pos, seq)
    if np.isfinite(lp):
      out.append((lp / len(seq) ** alpha, seq, lp))
  return sorted(out, key=lambda h: -h[0])


def reference_beam(start, pos, num_new, beams, alpha, stops):
  """Beam search written from the rules, run to max_new_tokens (no early exit)."""
  live, pool = [((), 0.)], []
  for n in range(num_new):
    cands = [(seq + (v,), lp + LOGP[pos + n, seq[-1] if seq else start, v])
             for seq, lp in live for v in range(V)]
    cands = [c for c in cands if np.isfinite(c[1])]
    done = [c for c in cands if _ended(c[0], stops, num_new)]
    pool = sorted(pool + [(lp / (n + 1) ** alpha, seq, lp) for seq, lp in done],
                  key=lambda h: -h[0])[:beams]
    live = sorted([c for c in cands if not _ended(c[0], stops, num_new)],
                  key=lambda c: -c[1])[:beams]
  return pool


def _check_against(out, row, want, num_new, pad=0):
  beams = out.tokens.shape[1]
  for j in range(beams):
    if j >= len(want):
      assert out.scores[row, j] == -np.inf and out.lengths[row, j] == 0
      np.testing.assert_array_equal(out.tokens[row, j], pad)
      continue
    score, seq, lp = want[j]
    got = np.asarray(out.tokens[row, j])
    assert int(out.lengths[row, j]) == len(seq)
    np.testing.assert_array_equal(got[:len(seq)], seq)
    np.testing.assert_array_equal(got[len(seq):], pad)
    np.testing.assert_allclose(out.scores[row, j], score, atol=ATOL, rtol=0)
    np.testing.assert_allclose(out.log_probs[row, j], lp, atol=ATOL, rtol=0)
  assert out.tokens.shape[2] == num_new


@jax.jit
def _markov_beams_16(prompt, lengths, alpha):
  return beam_search(markov_step, (), prompt, lengths, max_new_tokens=3,
                     num_beams=16, length_penalty=alpha, stop_tokens=(STOP,))


@pytest.mark.parametrize("alpha", [0., 1., 2.])
def test_exhaustive_beams_equal_brute_force(alpha):
  """num_beams >= the number of open prefixes: the pool is the exact top 16."""
  prompt = jnp.array([[2, 3], [1, 0], [4, 4]])
  lengths = jnp.array([2, 1, 2])
  out = _markov_beams_16(prompt, lengths, alpha)
  for row, (start, pos) in enumerate(((3, 1), (1, 0), (4, 1))):
    want = brute_force(start, pos, 3, alpha, (STOP,))
    _check_against(out, row, want[:16], 3)
    assert len(want) > 16  # the cut at 16 is a real choice


@pytest.mark.parametrize("beams, alpha", [(2, 0.), (3, -0.5), (4, 1.5)])
def test_pruned_beams_equal_reference_beam_search(beams, alpha):
  prompt = jnp.array([[0, 2], [3, 1], [1, 1]])
  lengths = jnp.array([2, 2, 1])
  out = jax.jit(lambda p, n, a: beam_search(
      markov_step, (), p, n, max_new_tokens=5, num_beams=beams,
      length_penalty=a, stop_tokens=(STOP,)))(prompt, lengths, alpha)
  for row, (start, pos) in enumerate(((2, 1), (1, 1), (1, 0))):
    _check_against(out, row, reference_beam(start, pos, 5, beams, alpha,
                                            (STOP,)), 5)


def test_best_first_and_scores_are_normalised_log_probs():
  out = beam_search(markov_step, (), jnp.array([[1], [2]]), jnp.array([1, 1]),
                    max_new_tokens=6, num_beams=4, length_penalty=0.7,
                    stop_tokens=(STOP,), pad_token=3)
  assert isinstance(out, Beams)
  assert np.all(np.diff(np.asarray(out.scores), axis=1) <= 0)
  np.testing.assert_allclose(out.scores,
                             out.log_probs / out.lengths ** 0.7, rtol=1e-6)
  for row, start in enumerate((1, 2)):
    for j in range(4):
      n = int(out.lengths[row, j])
      seq = np.asarray(out.tokens[row, j])
      assert n == 6 or seq[n - 1] == STOP          # stopped or full length
      assert STOP not in seq[:n - 1]
      np.testing.assert_array_equal(seq[n:], 3)    # pad_token after the end
      lp = _log_prob(start, 0, seq[:n])
      np.testing.assert_allclose(out.log_probs[row, j], lp, atol=ATOL)


@pytest.mark.parametrize("alpha, prefill_fn", [(1., None),
                                               (-1., markov_prefill)])
def test_one_beam_is_greedy_decode(alpha, prefill_fn):
  prompt = jnp.array([[0, 3, 2], [4, 1, 1], [2, 0, 0]])
  lengths = jnp.array([3, 2, 1])
  out = beam_search(markov_step, (), prompt, lengths, max_new_tokens=7,
                    num_beams=1, length_penalty=alpha, prefill_fn=prefill_fn)
  greedy = decode(jax.random.key(0), markov_step, (), prompt, lengths,
                  max_new_tokens=7, temperature=0.)
  np.testing.assert_array_equal(out.tokens[:, 0], greedy.tokens)
  np.testing.assert_array_equal(out.lengths[:, 0], greedy.lengths)


def test_one_beam_with_stops_keeps_the_best_finished_not_greedy():
  """With stop tokens one beam is not greedy: every stop continuation of the
  live beam is a candidate for the pool, so it returns a hypothesis at least
  as good as greedy's (here strictly better in row 1)."""
  prompt = jnp.array([[0, 3, 2], [4, 1, 1], [2, 0, 0]])
  lengths = jnp.array([3, 2, 1])
  out = beam_search(markov_step, (), prompt, lengths, max_new_tokens=7,
                    num_beams=1, length_penalty=0., stop_tokens=(STOP,))
  greedy = decode(jax.random.key(0), markov_step, (), prompt, lengths,
                  max_new_tokens=7, temperature=0., stop_tokens=(STOP,))
  for row, (start, pos) in enumerate(((2, 2), (1, 1), (2, 0))):
    seq = np.asarray(greedy.tokens[row, :int(greedy.lengths[row])])
    assert out.scores[row, 0] >= _log_prob(start, pos, seq) - ATOL
  assert out.scores[1, 0] > _log_prob(1, 1, greedy.tokens[1, :4]) + 0.1


def test_length_penalty_changes_the_winner():
  """From token 0: stop at once (p = 0.5), or repeat token 1 (p = 0.8 each)."""
  probs = np.full((3, 3), 1e-3)
  probs[0] = [1e-3, 0.499, 0.5]
  probs[1] = [1e-3, 0.8, 0.199]
  table = jnp.asarray(np.log(probs), jnp.float32)
  step = lambda s, t, p: (table[t], s)
  run = lambda alpha: beam_search(step, (), jnp.array([[0]]), jnp.array([1]),
                                  max_new_tokens=4, num_beams=3,
                                  length_penalty=alpha, stop_tokens=(2,))
  short, long = run(0.), run(1.)
  # alpha = 0: log 0.5 = -0.69 beats log(0.499 * 0.8^3) = -1.36 (no stop).
  np.testing.assert_array_equal(short.tokens[0, 0], [2, 0, 0, 0])
  # alpha = 1: -1.36 / 4 = -0.34 beats -0.69 / 1.
  np.testing.assert_array_equal(long.tokens[0, 0], [1, 1, 1, 1])
  np.testing.assert_allclose(long.scores[0, 0], np.log(0.499 * 0.8 ** 3) / 4,
                             atol=ATOL)


def test_early_exit_when_no_live_beam_can_win():
  """Stop token 2 has p = 0.98 after every token; calls counted by a callback.

  Expansion 1 (after the 2 prompt calls) pools [2]; expansion 2 pools [0, 2]
  (log 0.0098); the live beams' log 1e-4 cannot beat it: 3 calls, not 51.
  """
  probs = np.full((3, 3), 0.01)
  probs[:, 2] = 0.98
  table = jnp.asarray(np.log(probs), jnp.float32)
  calls = []

  def step(state, tokens, positions):
    jax.debug.callback(lambda: calls.append(1))
    return table[tokens], state

  out = jax.jit(lambda: beam_search(
      step, (), jnp.array([[0, 1]]), jnp.array([2]), max_new_tokens=50,
      num_beams=2, length_penalty=0., stop_tokens=(2,)))()
  jax.effects_barrier()
  np.testing.assert_array_equal(out.lengths, [[1, 2]])
  np.testing.assert_array_equal(out.tokens[0, :, :2], [[2, 0], [0, 2]])
  assert len(calls) == 3


def test_fewer_finite_hypotheses_than_beams_leave_empty_slots():
  probs = np.full((3, 3), 0.)
  probs[0] = [0., 0.5, 0.5]
  probs[1] = [0., 0., 1.]
  with np.errstate(divide="ignore"):
    table = jnp.asarray(np.log(probs), jnp.float32)
  step = lambda s, t, p: (table[t], s)
  out = beam_search(step, (), jnp.array([[0]]), jnp.array([1]),
                    max_new_tokens=3, num_beams=4, stop_tokens=(2,),
                    pad_token=0)
  # [1, 2]: log 0.5 / 2 beats [2]: log 0.5 / 1; nothing else is finite.
  np.testing.assert_array_equal(out.lengths, [[2, 1, 0, 0]])
  np.testing.assert_array_equal(out.tokens[0], [[1, 2, 0], [2, 0, 0],
                                                [0, 0, 0], [0, 0, 0]])
  np.testing.assert_array_equal(out.scores[0, 2:], -np.inf)
  np.testing.assert_array_equal(out.log_probs[0, 2:], -np.inf)


def test_jit_controls_as_data_compile_once():
  prompt = jnp.array([[1, 2], [3, 0]])
  run = jax.jit(chex.assert_max_traces(lambda p, n, a: beam_search(
      markov_step, (), p, n, max_new_tokens=4, num_beams=3, length_penalty=a,
      stop_tokens=(STOP,)), n=1))
  first = run(prompt, jnp.array([2, 1]), jnp.array([0., 1.]))
  second = run(prompt, jnp.array([2, 1]), jnp.array([1., 0.]))
  eager = beam_search(markov_step, (), prompt, jnp.array([2, 1]),
                      max_new_tokens=4, num_beams=3, length_penalty=[0., 1.],
                      stop_tokens=(STOP,))
  chex.assert_trees_all_equal(first, eager)
  # Per-row penalties: a row's result depends on its own only.
  alone = beam_search(markov_step, (), prompt[:1], jnp.array([2]),
                      max_new_tokens=4, num_beams=3, length_penalty=1.,
                      stop_tokens=(STOP,))
  chex.assert_trees_all_equal(jax.tree.map(lambda x: x[:1], second), alone)


def test_traced_invalid_length_penalty_marks_only_its_row():
  out = jax.jit(lambda a: beam_search(
      markov_step, (), jnp.array([[1], [2]]), jnp.array([1, 1]),
      max_new_tokens=3, num_beams=2, length_penalty=a))(jnp.array([1., jnp.nan]))
  assert np.all(np.asarray(out.tokens[1]) == -1) and np.all(out.lengths[1] == -1)
  assert np.all(np.isnan(out.scores[1])) and np.all(np.isnan(out.log_probs[1]))
  assert np.all(np.asarray(out.lengths[0]) == 3)
  assert np.all(np.isfinite(out.scores[0]))


# The transformer: KVCache [num_layers, B * num_beams, max_len, heads, head_dim].
TV = 13


def _transformer():
  config = TransformerConfig(vocab_size=TV, max_len=24, dim=16, num_layers=2,
                             num_heads=4, num_kv_heads=2)
  model = TransformerLM(config)
  params = model.init(jax.random.key(0))
  # Sharper logits (the init is nearly uniform), so near-ties are rare.
  params["head"]["kernel"] = params["head"]["kernel"] * 40.
  return model, params


def test_transformer_beams_with_and_without_prefill_are_true_log_probs():
  model, params = _transformer()
  batch, beams, num_new = 2, 3, 5
  prompt = jax.random.randint(jax.random.key(1), (batch, 4), 1, TV, jnp.int32)
  lengths = jnp.array([4, 2])
  cache = model.init_cache(batch * beams, 4 + num_new)
  run = jax.jit(lambda fns, c, p, n: beam_search(
      fns[0], c, p, n, max_new_tokens=num_new, num_beams=beams,
      stop_tokens=(3,), prefill_fn=fns[1], state_batch_axis=fns[2]),
      static_argnums=0)
  step_fn, prefill_fn = model.make_step_fn(params), model.make_prefill_fn(params)
  by_steps = run((step_fn, None, None), cache, prompt, lengths)
  by_prefill = run((step_fn, prefill_fn, 1), cache, prompt, lengths)
  # The same beam scores; two near-tied hypotheses (equal to float rounding) may swap or
  # replace each other, since the cached and the prefilled pass round differently by
  # machine, so the tokens are checked per hypothesis below, not against each other.
  np.testing.assert_allclose(np.sort(by_steps.scores, -1), np.sort(by_prefill.scores, -1),
                             atol=ATOL)
  # Every hypothesis' log_prob is that of a full causal pass over it, so the
  # cache was reordered with the beams.
  buf = np.zeros((batch * beams, 4 + num_new), np.int32)
  for b in range(batch):
    n = int(lengths[b])
    for j in range(beams):
      buf[b * beams + j, :n] = np.asarray(prompt[b, :n])
      buf[b * beams + j, n:n + num_new] = np.asarray(by_steps.tokens[b, j])
  logp = np.asarray(jax.nn.log_softmax(
      jax.jit(model.apply)(params, jnp.asarray(buf)), axis=-1))
  for b in range(batch):
    n = int(lengths[b])
    for j in range(beams):
      row, length = b * beams + j, int(by_steps.lengths[b, j])
      want = sum(logp[row, n - 1 + t, buf[row, n + t]] for t in range(length))
      np.testing.assert_allclose(by_steps.log_probs[b, j], want, atol=1e-4)
  assert len({tuple(np.asarray(t)) for t in by_steps.tokens[0]}) == beams


def _ambiguous_step(state, tokens, positions):
  return jnp.zeros((tokens.shape[0], V)), state


@pytest.mark.parametrize("kwargs, name", [
    (dict(num_beams=0), "num_beams"),
    (dict(num_beams=True), "num_beams"),
    (dict(num_beams=2.0), "num_beams"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(length_penalty=float("nan")), "length_penalty"),
    (dict(length_penalty=float("inf")), "length_penalty"),
    (dict(length_penalty=[1., 1., 1.]), "length_penalty"),
    (dict(stop_tokens=(V,)), "stop_tokens"),
    (dict(stop_tokens=(1.5,)), "stop_tokens"),
    (dict(pad_token=0.5), "pad_token"),
    (dict(prompt_lengths=[0, 1]), "prompt_lengths"),
    (dict(prompt_lengths=[3, 1]), "prompt_lengths"),
    (dict(prompt=[[1, V], [1, 1]]), "prompt"),
    (dict(state_batch_axis=1), "state_batch_axis"),
    (dict(state_batch_axis="0"), "state_batch_axis"),
    (dict(state=jnp.zeros((4, 4))), "state_batch_axis"),
    (dict(step_fn=lambda s, t, p: (jnp.zeros((2, V)), s)), "step_fn"),
])
def test_bad_input_raises_naming_the_argument(kwargs, name):
  args = dict(step_fn=markov_step, state=jnp.zeros((4,)),
              prompt=[[1, 2], [3, 4]], prompt_lengths=[2, 1], max_new_tokens=3,
              num_beams=2)
  args.update(kwargs)
  with pytest.raises(ValueError, match=name):
    beam_search(args.pop("step_fn"), args.pop("state"),
                jnp.asarray(args.pop("prompt")), args.pop("prompt_lengths"),
                **args)
