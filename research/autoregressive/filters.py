"""Per-row logit filters of the decode loop, applied in one fixed order.

Every function takes logits [B, V] and one value per row ([B] arrays, passed as
data, so changing them never recompiles); removed tokens become -inf; ties are
decided by a stable descending sort, in favour of the lower token id. The order
(``filter_logits``) is that of Hugging Face ``generate`` and of min-p sampling:

1. repetition penalty (Keskar et al. 2019, CTRL): l_j / r if l_j > 0 else
   l_j * r, for tokens j already in the row's prompt or output; r = 1 is off;
2. temperature (Ackley et al. 1985): l / T; T = 0 keeps only the argmax (greedy);
3. top-k (Fan et al. 2018): keep the k largest; k = 0 is off;
4. top-p / nucleus (Holtzman et al. 2020): q = softmax of what is left, sorted
   descending; keep sorted token j iff mass_before_j = sum_{i<j} q_i < p, and
   always the first, so the token whose mass crosses p is kept and a prefix
   whose mass equals p exactly stops there; no tolerance (unlike
   ``research.sampling.discrete.top_p_filter``'s 1e-6): the float32 cumsum is
   compared with p as is. p = 1 is off (keeps every token, even where the
   float32 cumsum rounds to >= 1 early);
5. min-p (Nguyen et al. 2024): keep j iff r_j >= min_p * max_i r_i, r = softmax
   of what is left, i.e. exp(l_j - max_i l_i) >= min_p; min_p = 0 is off.

No step gathers at a computed cut-off index (the usual source of NaN when the
cumulative sum never reaches p): every decision is a mask on the sorted axis
mapped back through the inverse permutation. -inf logits stay -inf, sort last
and carry no mass. Each row needs at least one finite logit.
"""
import jax
import jax.numpy as jnp

_FLOAT = jnp.float32


def _col(x):
  """Per-row values [B] as a column [B, 1] for broadcasting against [B, V]."""
  return jnp.asarray(x)[:, None]


def _descending_order(logits):
  """Stable descending order and its inverse (ranks), ties to the lower id."""
  order = jnp.argsort(-logits, axis=-1, stable=True)
  ranks = jnp.argsort(order, axis=-1, stable=True)
  return order, ranks


def apply_repetition_penalty(logits, seen, penalty):
  """CTRL repetition penalty (Keskar et al. 2019; as in Hugging Face).

  l'_j = l_j / r if l_j > 0 else l_j * r, for j with seen[b, j]; others unchanged.

  Args:
    logits: [B, V] float32.
    seen: [B, V] bool, tokens already in the row's prompt or output.
    penalty: [B] r > 0 (1 leaves the logits bitwise unchanged).
  """
  r = _col(penalty).astype(_FLOAT)
  penalised = jnp.where(logits > 0, logits / r, logits * r)
  return jnp.where(seen, penalised, logits)


def apply_temperature(logits, temp):
  """softmax(l / T) per row (Ackley et al. 1985); T = 0 keeps only the argmax.

  Args:
    logits: [B, V] float32.
    temp: [B] T >= 0; T = 0 is greedy (ties: the lowest id).
  """
  t = _col(temp).astype(_FLOAT)
  greedy = t == 0
  scaled = logits / jnp.where(greedy, 1., t)
  best = jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1],
                        dtype=jnp.bool_)
  return jnp.where(greedy & ~best, -jnp.inf, jnp.where(greedy, logits, scaled))


def top_k_filter(logits, k):
  """Keep the k largest logits of each row (Fan et al. 2018); k = 0 keeps all.

  keep_j = rank_j < k, rank = position in the stable descending sort.
  """
  _, ranks = _descending_order(logits)
  k = _col(k)
  return jnp.where((k == 0) | (ranks < k), logits, -jnp.inf)


def top_p_filter(logits, p):
  """Nucleus filter (Holtzman et al. 2020): keep j iff mass_before_j < p.

  mass_before_j = sum_{i<j} q_i over the stable descending sort of
  q = softmax(logits); the first token is always kept; p >= 1 keeps all.
  Example: q = [0.25, 0.25, 0.25, 0.25], p = 0.5 keeps exactly two (the
  cumulative sum equals p at the second; mass_before of the third is 0.5).
  """
  order, ranks = _descending_order(logits)
  sorted_probs = jax.nn.softmax(jnp.take_along_axis(logits, order, axis=-1),
                                axis=-1)
  cumulative = jnp.cumsum(sorted_probs, axis=-1)
  mass_before = jnp.concatenate(
      [jnp.zeros_like(cumulative[:, :1]), cumulative[:, :-1]], axis=-1)
  p = _col(p).astype(_FLOAT)
  keep_sorted = (mass_before < p).at[:, 0].set(True)
  keep = jnp.take_along_axis(keep_sorted, ranks, axis=-1) | (p >= 1)
  return jnp.where(keep, logits, -jnp.inf)


def min_p_filter(logits, m):
  """Min-p filter (Nguyen et al. 2024): keep j iff r_j >= m * max_i r_i.

  r = softmax(logits), tested as exp(l_j - max_i l_i) >= m; the most probable
  token always stays (m < 1); m = 0 keeps all.
  """
  m = _col(m).astype(_FLOAT)
  ratio = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
  return jnp.where((m == 0) | (ratio >= m), logits, -jnp.inf)


def filter_logits(logits, seen, *, temperature, top_k, top_p, min_p,
                  repetition_penalty):
  """The fixed order: penalty, temperature, top-k, top-p, min-p ([B] controls).

  Returns the truncated logits; the sampling distribution is their softmax.
  The sorting filters run only when some row has them on (``lax.cond``; a filter
  that is off in every row returns its input unchanged, so the result is the same
  bits either way), which keeps greedy and plain sampling free of the sorts.
  """
  out = apply_repetition_penalty(jnp.asarray(logits, _FLOAT), seen,
                                 repetition_penalty)
  out = apply_temperature(out, temperature)
  k, p = jnp.asarray(top_k), jnp.asarray(top_p)
  out = jax.lax.cond(jnp.any(k > 0), lambda x: top_k_filter(x, k), lambda x: x, out)
  out = jax.lax.cond(jnp.any(p < 1), lambda x: top_p_filter(x, p), lambda x: x, out)
  return min_p_filter(out, min_p)
