"""Tests for research.sampling.discrete (chi-square with fixed keys, p > 0.01)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from research.sampling import discrete

N = 20_000
P_MIN = 0.01
NEG_INF = -np.inf


def _key(i=0):
  return jax.random.key(i)


def _chi2_pvalue(samples, probs):
  """Chi-square p-value of integer samples against probs (zero-prob bins excluded)."""
  probs = np.asarray(probs, np.float64)
  counts = np.bincount(np.asarray(samples).ravel(), minlength=probs.size)
  assert counts.size == probs.size
  assert np.all(counts[probs == 0] == 0), "sampled a zero-probability category"
  support = probs > 0
  expected = probs[support] / probs[support].sum() * counts.sum()
  return stats.chisquare(counts[support], expected).pvalue


def _kept(filtered):
  return np.isfinite(np.asarray(filtered))


def _assert_kept(filtered, expected):
  """The entries a top-k / top-p filter kept (finite logits) are exactly `expected`."""
  np.testing.assert_array_equal(_kept(filtered), expected)


# ---------------------------------------------------------------- categorical
def test_categorical_chi_square():
  probs = jnp.array([0.1, 0.2, 0.3, 0.4])
  x = discrete.categorical(_key(1), probs, (N,))
  assert x.shape == (N,) and x.dtype == jnp.int32
  assert _chi2_pvalue(x, probs) > P_MIN


def test_categorical_zero_probabilities_never_sampled():
  probs = jnp.array([0., 0.5, 0., 0.5, 0.])
  x = discrete.categorical(_key(2), probs, (N,))
  assert _chi2_pvalue(x, probs) > P_MIN
  np.testing.assert_array_equal(discrete.categorical(_key(3), jnp.array([0., 0., 1.]), (50,)), 2)
  np.testing.assert_array_equal(discrete.categorical(_key(3), jnp.array([1., 0., 0.]), (50,)), 0)


def test_categorical_batched_probs():
  probs = jnp.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
  x = discrete.categorical(_key(4), probs, (N,))
  assert x.shape == (N, 2)
  for row in range(2):
    assert _chi2_pvalue(x[:, row], probs[row]) > P_MIN
  assert discrete.categorical(_key(4), probs).shape == (2,)


def test_categorical_rounded_probs_stay_in_range():
  probs = jnp.full((7,), 1. / 7.)       # float32 sum is not exactly 1
  x = np.asarray(discrete.categorical(_key(5), probs, (N,)))
  assert x.min() >= 0 and x.max() <= 6
  assert _chi2_pvalue(x, probs) > P_MIN


# ---------------------------------------------------------------- gumbel
def test_gumbel_max_chi_square_and_neg_inf():
  logits = jnp.array([1., NEG_INF, 0., 2., -1.])
  keys = jax.random.split(_key(6), N)
  x = jax.vmap(lambda k: discrete.gumbel_max(k, logits))(keys)
  assert x.dtype == jnp.int32
  assert _chi2_pvalue(x, jax.nn.softmax(logits)) > P_MIN


def test_gumbel_max_batched_shape():
  logits = jnp.zeros((3, 4, 5))
  assert discrete.gumbel_max(_key(7), logits).shape == (3, 4)


def test_gumbel_softmax_simplex_and_small_tau_frequencies():
  probs = np.array([0.5, 0.3, 0.15, 0.05])
  logits = jnp.log(probs)
  keys = jax.random.split(_key(8), N)
  y = np.asarray(jax.vmap(lambda k: discrete.gumbel_softmax(k, logits, tau=0.05))(keys))
  np.testing.assert_allclose(y.sum(-1), 1., atol=1e-5)
  # Small tau: samples are nearly one-hot with categorical frequencies.
  assert np.mean(y.max(-1)) > 0.95 and np.mean(y.max(-1) > 0.9) > 0.9
  np.testing.assert_allclose(y.mean(0), probs, atol=0.01)
  assert _chi2_pvalue(y.argmax(-1), probs) > P_MIN


def test_gumbel_softmax_large_tau_is_soft():
  y = discrete.gumbel_softmax(_key(9), jnp.log(jnp.array([0.5, 0.3, 0.2])), tau=100.)
  assert np.all(np.asarray(y) > 0.3)


def test_gumbel_softmax_hard_forward_is_exactly_one_hot_many_rows():
  # y_hard + y - stop_gradient(y) would round (1 + y) - y away from 1 in some rows.
  logits = jax.random.normal(_key(18), (64, 10))
  hard = np.asarray(jax.jit(lambda k: discrete.gumbel_softmax(k, logits, 2., hard=True))(_key(19)))
  np.testing.assert_array_equal(hard, np.eye(10)[hard.argmax(-1)])


def test_gumbel_softmax_hard_straight_through():
  logits = jnp.array([[0.5, 1.5, -0.3, 0.2], [2., 0., 0., -1.]])
  weights = jnp.array([1., -2., 3., 0.5])
  key = _key(10)
  hard = discrete.gumbel_softmax(key, logits, tau=0.7, hard=True)
  soft = discrete.gumbel_softmax(key, logits, tau=0.7, hard=False)
  # Forward: exactly one-hot at the soft argmax.
  assert set(np.unique(np.asarray(hard))) <= {0., 1.}
  np.testing.assert_array_equal(hard.sum(-1), 1.)
  np.testing.assert_array_equal(hard.argmax(-1), soft.argmax(-1))
  # Backward: the gradient of the soft relaxation.
  loss = lambda l, h: jnp.sum(discrete.gumbel_softmax(key, l, 0.7, hard=h) * weights)
  g_hard = jax.grad(loss)(logits, True)
  g_soft = jax.grad(loss)(logits, False)
  assert np.any(np.abs(np.asarray(g_soft)) > 1e-3)
  np.testing.assert_allclose(g_hard, g_soft, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- temperature
def test_temperature_worked_example():
  logits = jnp.array([3., 1., 0.5])
  p1 = jax.nn.softmax(discrete.apply_temperature(logits, 1.))
  np.testing.assert_allclose(np.round(np.asarray(p1, np.float64), 2), [0.82, 0.11, 0.07],
                             atol=1e-6)
  p01 = np.asarray(jax.nn.softmax(discrete.apply_temperature(logits, 0.1)))
  assert p01[0] > 0.9999 and p01[1:].max() < 1e-4
  np.testing.assert_allclose(discrete.apply_temperature(logits, 2.), logits / 2.)


def test_temperature_zero_is_argmax_with_ties_to_first():
  logits = jnp.array([[1., 3., 3., -1.], [0.5, NEG_INF, 0.2, 0.1]])
  out = np.asarray(discrete.apply_temperature(logits, 0))
  np.testing.assert_array_equal(out[0], [NEG_INF, 3., NEG_INF, NEG_INF])
  np.testing.assert_array_equal(out[1], [0.5, NEG_INF, NEG_INF, NEG_INF])
  # Traced temperature works under jit and gives the same answers.
  jitted = jax.jit(discrete.apply_temperature)
  np.testing.assert_array_equal(jitted(logits, 0.), out)
  np.testing.assert_allclose(jitted(logits, 0.5), logits / 0.5)


# ---------------------------------------------------------------- top-k / top-p
WORKED = np.array([0.5, 0.25, 0.15, 0.05, 0.03, 0.02])


def test_top_k_worked_example_and_edges():
  logits = jnp.log(WORKED)
  _assert_kept(discrete.top_k_filter(logits, 3), [1, 1, 1, 0, 0, 0])
  _assert_kept(discrete.top_k_filter(logits, 1), [1, 0, 0, 0, 0, 0])
  assert _kept(discrete.top_k_filter(logits, 100)).all()
  kept = discrete.top_k_filter(logits, 3)
  np.testing.assert_array_equal(np.asarray(kept)[:3], np.asarray(logits)[:3])


def test_top_k_ties_permuted_batched():
  logits = jnp.array([[0., 2., 1., 2., 2.],      # ties: the lower indices win
                      [5., -1., 3., NEG_INF, 4.]])
  _assert_kept(discrete.top_k_filter(logits, 2), [[0, 1, 0, 1, 0], [1, 0, 0, 0, 1]])
  # -inf entries stay -inf even when k exceeds the number of finite entries.
  _assert_kept(discrete.top_k_filter(logits, 5)[1], [1, 1, 1, 0, 1])


def test_top_p_worked_examples():
  logits = jnp.log(WORKED)
  _assert_kept(discrete.top_p_filter(logits, 0.9), [1, 1, 1, 0, 0, 0])
  _assert_kept(discrete.top_p_filter(logits, 0.3), [1, 0, 0, 0, 0, 0])
  tie = jnp.log(jnp.array([0.3, 0.3, 0.2, 0.1, 0.1]))
  _assert_kept(discrete.top_p_filter(tie, 0.9), [1, 1, 1, 1, 0])
  _assert_kept(discrete.top_p_filter(tie, 0.5), [1, 1, 0, 0, 0])
  _assert_kept(discrete.top_p_filter(tie, 0.3), [1, 0, 0, 0, 0])
  # Kept entries keep their logits.
  out = np.asarray(discrete.top_p_filter(tie, 0.9))
  np.testing.assert_array_equal(out[:4], np.asarray(tie)[:4])


def test_top_p_cumsum_rounding_below_p():
  # float32 cumsum gives 0.54999995 < 0.55 and 0.79999995 < 0.8 here; the exact
  # prefix mass reaches p, so no extra token may be kept.
  logits = jnp.log(jnp.array([0.3, 0.25, 0.25, 0.2]))
  _assert_kept(discrete.top_p_filter(logits, 0.3), [1, 0, 0, 0])
  _assert_kept(discrete.top_p_filter(logits, 0.55), [1, 1, 0, 0])
  _assert_kept(discrete.top_p_filter(logits, 0.8), [1, 1, 1, 0])
  _assert_kept(discrete.top_p_filter(logits, 0.81), [1, 1, 1, 1])


def test_top_p_permuted_inputs_and_ties():
  probs = np.array([0.1, 0.3, 0.1, 0.2, 0.3])
  kept = _kept(discrete.top_p_filter(jnp.log(probs), 0.9))
  np.testing.assert_array_equal(kept, [1, 1, 0, 1, 1])   # first 0.1 wins the tie
  perm = np.array([3, 0, 5, 1, 4, 2])
  kept = _kept(discrete.top_p_filter(jnp.log(WORKED[perm]), 0.9))
  np.testing.assert_array_equal(kept, np.isin(perm, [0, 1, 2]))


def test_top_p_neg_inf_p_one_and_at_least_one():
  logits = jnp.array([NEG_INF, 0., NEG_INF, 0., -100.])
  _assert_kept(discrete.top_p_filter(logits, 0.6), [0, 1, 0, 1, 0])
  # p = 1 keeps every finite entry, even with underflowing probability.
  _assert_kept(discrete.top_p_filter(logits, 1.), [0, 1, 0, 1, 1])
  # Tiny p keeps exactly the argmax.
  _assert_kept(discrete.top_p_filter(logits, 1e-9), [0, 1, 0, 0, 0])
  all_neg_inf_but_one = jnp.array([NEG_INF, NEG_INF, 1.])
  _assert_kept(discrete.top_p_filter(all_neg_inf_but_one, 0.5), [0, 0, 1])


def test_top_p_batched_rows_differ():
  logits = jnp.stack([jnp.log(WORKED), jnp.log(WORKED[::-1])])
  kept = _kept(discrete.top_p_filter(logits, 0.9))
  np.testing.assert_array_equal(kept, [[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]])
  p3 = discrete.top_p_filter(jnp.zeros((2, 3, 4)), 0.5)
  assert p3.shape == (2, 3, 4) and _kept(p3).sum() == 2 * 3 * 2


def _top_p_reference(logits, p):
  """float64 reference: smallest descending prefix with mass >= p."""
  order = np.argsort(-logits, kind="stable")
  probs = np.exp(logits[order] - logits.max())
  probs /= probs.sum()
  count = int(np.searchsorted(np.cumsum(probs), p) + 1) if p < 1 else logits.size
  keep = np.zeros(logits.size, bool)
  keep[order[:min(count, logits.size)]] = True
  return keep


def test_top_p_matches_float64_reference_on_random_rows():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(64, 12)) * 2.
  ps = rng.uniform(0.05, 0.99, size=64)
  out = jax.vmap(discrete.top_p_filter)(jnp.asarray(logits, jnp.float32), jnp.asarray(ps))
  for row in range(64):
    np.testing.assert_array_equal(_kept(out[row]), _top_p_reference(logits[row], ps[row]))


# ---------------------------------------------------------------- sample_logits
def test_sample_logits_greedy_is_deterministic():
  logits = jnp.array([[0.1, 2., 2., -1.], [3., 0., 1., NEG_INF]])
  keys = jax.random.split(_key(11), 64)
  x = jax.vmap(lambda k: discrete.sample_logits(k, logits, temperature=0.))(keys)
  np.testing.assert_array_equal(x, np.tile([1, 0], (64, 1)))
  x = jax.vmap(lambda k: discrete.sample_logits(k, logits, 0, top_k=3, top_p=0.2))(keys)
  np.testing.assert_array_equal(x, np.tile([1, 0], (64, 1)))


@pytest.mark.parametrize("top_k,top_p,temperature", [
    (3, None, 1.), (None, 0.9, 1.), (4, 0.75, 1.), (None, 0.8, 0.7)])
def test_sample_logits_filters_and_renormalizes(top_k, top_p, temperature):
  logits = jnp.log(jnp.asarray(WORKED[[3, 0, 5, 1, 4, 2]]))   # unsorted
  keys = jax.random.split(_key(12), N)
  x = jax.vmap(lambda k: discrete.sample_logits(k, logits, temperature, top_k, top_p))(keys)
  filtered = discrete.apply_temperature(logits, temperature)
  if top_k is not None:
    filtered = discrete.top_k_filter(filtered, top_k)
  if top_p is not None:
    filtered = discrete.top_p_filter(filtered, top_p)
  target = np.asarray(jax.nn.softmax(filtered))
  assert 1 < np.count_nonzero(target) < 6
  assert _chi2_pvalue(x, target) > P_MIN   # also asserts removed tokens never appear


def test_sample_logits_batched_and_traced_once():
  logits = jnp.log(jnp.array([[0.2, 0.8], [0.9, 0.1]]))
  fn = jax.jit(lambda k: discrete.sample_logits(k, logits, 1., top_k=2, top_p=0.95))
  assert fn(_key(0)).shape == (2,)
  x = jax.vmap(fn)(jax.random.split(_key(13), N))
  assert _chi2_pvalue(x[:, 0], [0.2, 0.8]) > P_MIN
  # Row 1: mass before the 0.1 token is 0.9 < 0.95, so top_p keeps it.
  assert _chi2_pvalue(x[:, 1], [0.9, 0.1]) > P_MIN


# ---------------------------------------------------------------- jit / vmap
def test_jit_matches_eager():
  key = _key(14)
  logits = jnp.array([[0.3, -1., 2., 0.5, 0.], [1., 1., 0., NEG_INF, -2.]])
  probs = jax.nn.softmax(logits)
  fns = [
      lambda k: discrete.categorical(k, probs, (5,)),
      lambda k: discrete.gumbel_max(k, logits),
      lambda k: discrete.gumbel_softmax(k, logits, 0.5),
      lambda k: discrete.gumbel_softmax(k, logits, 0.5, hard=True),
      lambda k: discrete.sample_logits(k, logits, 0.8, top_k=3, top_p=0.9),
      lambda k: discrete.top_k_filter(logits, 2),
      lambda k: discrete.top_p_filter(logits, 0.7),
      lambda k: discrete.apply_temperature(logits, 0.),
  ]
  for fn in fns:
    np.testing.assert_allclose(jax.jit(fn)(key), fn(key), rtol=1e-6, atol=1e-6)


def test_sample_logits_compiles_once_across_keys_and_temperatures():
  logits = jnp.array([0.3, -1., 2., 0.5, 0.])

  @jax.jit
  @chex.assert_max_traces(n=1)
  def fn(key, temperature):
    return discrete.sample_logits(key, logits, temperature, top_k=3, top_p=0.9)

  for i, temperature in enumerate([1., 0.5, 0.]):
    fn(_key(i), temperature)
  assert fn(_key(7), 0.) == 2      # traced T = 0 is still greedy


def test_traced_probs_skip_value_checks():
  probs = jnp.array([0.25, 0.75])
  x = jax.jit(lambda k, p: discrete.categorical(k, p, (4,)))(_key(15), probs)
  np.testing.assert_array_equal(x, discrete.categorical(_key(15), probs, (4,)))


def test_vmap_over_keys_and_logits():
  keys = jax.random.split(_key(16), 3)
  logits = jnp.array([0.1, 0.5, -0.3, 1.2])
  batched = jax.vmap(lambda k: discrete.sample_logits(k, logits, 1., top_p=0.9))(keys)
  looped = jnp.stack([discrete.sample_logits(k, logits, 1., top_p=0.9) for k in keys])
  np.testing.assert_array_equal(batched, looped)
  rows = jax.random.normal(_key(17), (3, 6))
  np.testing.assert_array_equal(jax.vmap(lambda l: discrete.top_p_filter(l, 0.8))(rows),
                                discrete.top_p_filter(rows, 0.8))
  np.testing.assert_array_equal(jax.vmap(lambda l: discrete.top_k_filter(l, 2))(rows),
                                discrete.top_k_filter(rows, 2))


# ---------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("p", [0., -0.1, 1.5, float("nan")])
def test_bad_top_p(p):
  with pytest.raises(ValueError, match="top_p"):
    discrete.top_p_filter(jnp.zeros(3), p)
  with pytest.raises(ValueError, match="top_p"):
    discrete.sample_logits(_key(), jnp.zeros(3), top_p=p)


@pytest.mark.parametrize("k", [0, -2, 1.5, 2.0, True, "3"])
def test_bad_top_k(k):
  with pytest.raises(ValueError, match="top_k"):
    discrete.top_k_filter(jnp.zeros(3), k)
  with pytest.raises(ValueError, match="top_k"):
    discrete.sample_logits(_key(), jnp.zeros(3), top_k=k)


def test_bad_temperature_and_tau():
  with pytest.raises(ValueError, match="temperature"):
    discrete.apply_temperature(jnp.zeros(3), -0.5)
  with pytest.raises(ValueError, match="temperature"):
    discrete.sample_logits(_key(), jnp.zeros(3), temperature=-1.)
  for tau in (0., -1.):
    with pytest.raises(ValueError, match="tau"):
      discrete.gumbel_softmax(_key(), jnp.zeros(3), tau=tau)


def test_bad_probs():
  with pytest.raises(ValueError, match="probs"):
    discrete.categorical(_key(), jnp.array([0.5, 0.6]))
  with pytest.raises(ValueError, match="probs"):
    discrete.categorical(_key(), jnp.array([1.2, -0.2]))
  with pytest.raises(ValueError, match="probs"):
    discrete.categorical(_key(), jnp.array([[0.5, 0.5], [0.3, 0.3]]))
  with pytest.raises(ValueError, match="logits"):
    discrete.gumbel_max(_key(), jnp.array(1.))
