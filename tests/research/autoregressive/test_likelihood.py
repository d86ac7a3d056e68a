"""research.autoregressive.likelihood: the NLL summary, its standard error, count models."""

import math

import jax
import numpy as np
import pytest

from research.autoregressive import likelihood


def test_nll_summary_is_the_masked_token_mean_and_its_ratio_stderr():
  rng = np.random.default_rng(0)
  lp = -rng.exponential(size=(50, 7))
  mask = rng.random((50, 7)) < 0.7
  mask[:, 0] = True
  out = likelihood.nll_summary(lp, mask)
  s, n = -(lp * mask).sum(1), mask.sum(1)
  assert out.nats == pytest.approx(s.sum() / n.sum(), rel=1e-12)
  assert out.tokens == n.sum() and out.examples == 50
  # The delta-method standard error agrees with a bootstrap over examples within 15%.
  boot = []
  for _ in range(2000):
    idx = rng.integers(0, 50, 50)
    boot.append(s[idx].sum() / n[idx].sum())
  assert out.nats_stderr == pytest.approx(np.std(boot), rel=0.15)
  assert out.bits == pytest.approx(out.nats / math.log(2))


def test_equal_lengths_give_the_plain_standard_error():
  rng = np.random.default_rng(1)
  lp = -rng.exponential(size=(40, 5))
  per_example = -lp.mean(1)
  out = likelihood.nll_summary(lp)
  assert out.nats_stderr == pytest.approx(np.std(per_example, ddof=1) / math.sqrt(40), rel=1e-10)


def test_counts_are_add_alpha_frequencies():
  contexts = np.array([[0, 0, 1, 1, 1]])
  targets = np.array([[0, 1, 1, 1, 2]])
  table = likelihood.fit_counts(contexts, targets, None, num_contexts=2, vocab_size=3, alpha=0.5)
  np.testing.assert_allclose(np.exp(table[0]), np.array([1.5, 1.5, 0.5]) / 3.5)
  np.testing.assert_allclose(np.exp(table[1]), np.array([0.5, 2.5, 1.5]) / 4.5)
  np.testing.assert_allclose(np.exp(table).sum(1), 1.0)
  lp = likelihood.count_log_probs(table, contexts, targets)
  assert lp.shape == (1, 5) and lp[0, 4] == pytest.approx(math.log(1.5 / 4.5))


def test_masked_pairs_are_not_counted():
  table = likelihood.fit_counts(np.zeros((1, 3), int), np.array([[0, 1, 1]]),
                                np.array([[True, False, False]]), num_contexts=1, vocab_size=2)
  np.testing.assert_allclose(np.exp(table[0]), [2 / 3, 1 / 3])


def test_left_up_contexts_see_only_causal_neighbours():
  x = np.arange(6).reshape(1, 6) % 3   # a 2 x 3 image
  ctx, num = likelihood.left_up_contexts(x, 2, 3, outside=3)
  assert num == 6 * 16
  k = 4
  img = x.reshape(2, 3)
  for t in range(6):
    r, c = divmod(t, 3)
    left = img[r, c - 1] if c else 3
    up = img[r - 1, c] if r else 3
    assert ctx[0, t] == (t * k + left) * k + up


def test_word_mask_stops_after_the_first_boundary():
  targets = np.array([[3, 4, 0, 0, 0], [5, 0, 2, 0, 1]])
  np.testing.assert_array_equal(likelihood.word_mask(targets),
                                [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])


def test_token_log_probs_gathers_the_targets():
  logits = jax.random.normal(jax.random.key(0), (2, 3, 4))
  targets = np.array([[0, 1, 2], [3, 3, 0]])
  lp = np.asarray(likelihood.token_log_probs(logits, targets))
  full = np.asarray(jax.nn.log_softmax(logits, -1))
  np.testing.assert_allclose(lp, np.take_along_axis(full, targets[..., None], -1)[..., 0],
                             rtol=1e-6)


@pytest.mark.parametrize("call, match", [
    (lambda: likelihood.nll_summary(np.zeros((3,))), "log_probs"),
    (lambda: likelihood.nll_summary(np.zeros((1, 3))), "N >= 2"),
    (lambda: likelihood.nll_summary(np.zeros((2, 3)), np.zeros((2, 2), bool)), "mask"),
    (lambda: likelihood.nll_summary(np.zeros((2, 3)), np.zeros((2, 3), bool)), "mask"),
    (lambda: likelihood.fit_counts([[0]], [[0]], None, num_contexts=1, vocab_size=1,
                                   alpha=0.0), "alpha"),
    (lambda: likelihood.fit_counts([[2]], [[0]], None, num_contexts=1, vocab_size=1),
     "contexts"),
    (lambda: likelihood.fit_counts([[0]], [[5]], None, num_contexts=1, vocab_size=2),
     "targets"),
    (lambda: likelihood.left_up_contexts(np.zeros((1, 5)), 2, 3, 3), "targets"),
])
def test_bad_input_names_the_argument(call, match):
  with pytest.raises(ValueError, match=match):
    call()
