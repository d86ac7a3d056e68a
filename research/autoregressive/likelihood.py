"""Held-out likelihood of sequence models, and the count models it is compared with.

Every model here, the transformer and the baselines alike, is scored by the same
function: per-token log-probabilities log p(x_t | context) of the held-out
targets, [N, T] with a mask [N, T] of the predicted tokens, reduced by
``nll_summary`` to nats per token

    nll = sum_{i,t} m_it (-log p_it) / sum_{i,t} m_it

(bits per dimension = nll / log 2 when every pixel is a token), with the standard
error of this ratio estimator over the N independent examples (delta method;
Cochran 1977, Sec. 6.4): with S_i = sum_t m_it (-log p_it), n_i = sum_t m_it and
r = sum S / sum n,

    se = sqrt( sum_i (S_i - r n_i)^2 / (N (N - 1)) ) / mean(n_i),

which is std(S_i / n_i) / sqrt(N) when every example has the same length.

Count models: a table of add-alpha smoothed conditional frequencies
p(v | c) = (count(c, v) + alpha) / (count(c) + alpha V) over a discrete context c
(alpha = 1 is Laplace's rule, 1/2 Krichevsky & Trofimov 1981). Contexts:
  unigram          c = 0
  bigram           c = the previous token
  position         c = t (per-pixel marginal of images)
  left_up          c = (t, left neighbour, upper neighbour) in an H x W raster, with a
                   value `outside` beyond the border (the causal neighbours of a pixel)
"""

from __future__ import annotations

import math
import typing

import jax
import jax.numpy as jnp
import numpy as np


class NLLSummary(typing.NamedTuple):
  """Mean negative log-likelihood per token (nats) with its standard error."""
  nats: float
  nats_stderr: float
  tokens: int
  examples: int

  @property
  def bits(self) -> float:
    return self.nats / math.log(2.0)

  @property
  def bits_stderr(self) -> float:
    return self.nats_stderr / math.log(2.0)


def _check(log_probs, mask):
  lp = np.asarray(log_probs, np.float64)
  if lp.ndim != 2:
    raise ValueError(f"log_probs must have shape [N, T], got {lp.shape}")
  m = np.ones_like(lp, bool) if mask is None else np.asarray(mask, bool)
  if m.shape != lp.shape:
    raise ValueError(f"mask must have the shape of log_probs {lp.shape}, got {m.shape}")
  if lp.shape[0] < 2:
    raise ValueError(f"log_probs needs N >= 2 examples for a standard error, got {lp.shape[0]}")
  if not np.all(m.sum(1) > 0):
    raise ValueError("mask must mark at least one token of every example")
  return lp, m


def nll_summary(log_probs, mask=None) -> NLLSummary:
  """nats per masked token and its standard error over examples (module docstring)."""
  lp, m = _check(log_probs, mask)
  s = -np.where(m, lp, 0.0).sum(1)
  n = m.sum(1).astype(np.float64)
  r = s.sum() / n.sum()
  big_n = s.shape[0]
  se = math.sqrt(float(np.sum((s - r * n) ** 2)) / (big_n * (big_n - 1))) / float(n.mean())
  return NLLSummary(float(r), se, int(n.sum()), big_n)


def token_log_probs(logits, targets) -> jax.Array:
  """log softmax(logits)[targets]: [N, T, V] logits, [N, T] targets -> [N, T]."""
  logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
  return jnp.take_along_axis(logp, jnp.asarray(targets)[..., None], axis=-1)[..., 0]


# -- count models ---------------------------------------------------------------------
def fit_counts(contexts, targets, mask, *, num_contexts: int, vocab_size: int,
               alpha: float = 1.0) -> np.ndarray:
  """log p(v | c) [num_contexts, vocab_size] from the masked (context, target) pairs."""
  if alpha <= 0:
    raise ValueError(f"alpha must be > 0, got {alpha}")
  c, t = np.asarray(contexts).reshape(-1), np.asarray(targets).reshape(-1)
  m = np.ones_like(t, bool) if mask is None else np.asarray(mask, bool).reshape(-1)
  if c.shape != t.shape or m.shape != t.shape:
    raise ValueError(f"contexts, targets and mask must have one shape, got "
                     f"{np.shape(contexts)}, {np.shape(targets)}, {np.shape(mask)}")
  if np.any((c[m] < 0) | (c[m] >= num_contexts)):
    raise ValueError(f"contexts must lie in [0, {num_contexts}) (num_contexts)")
  if np.any((t[m] < 0) | (t[m] >= vocab_size)):
    raise ValueError(f"targets must lie in [0, {vocab_size}) (vocab_size)")
  table = np.full((num_contexts, vocab_size), float(alpha))
  np.add.at(table, (c[m], t[m]), 1.0)
  return np.log(table) - np.log(table.sum(1, keepdims=True))


def count_log_probs(table, contexts, targets) -> np.ndarray:
  """log p(target | context) under a fitted table, the shape of targets."""
  c, t = np.asarray(contexts), np.asarray(targets)
  return np.asarray(table)[np.clip(c, 0, table.shape[0] - 1), np.clip(t, 0, table.shape[1] - 1)]


def unigram_contexts(inputs) -> np.ndarray:
  return np.zeros(np.shape(inputs), np.int64)


def bigram_contexts(inputs) -> np.ndarray:
  """The previous token: the input at the target's position (inputs = tokens[:, :-1])."""
  return np.asarray(inputs, np.int64)


def position_contexts(targets) -> np.ndarray:
  n, t = np.shape(targets)
  return np.broadcast_to(np.arange(t, dtype=np.int64), (n, t))


def left_up_contexts(targets, height: int, width: int, outside: int) -> tuple[np.ndarray, int]:
  """(contexts [N, H W], num_contexts): c = (t, left, up) of raster-order pixels
  (values in [0, outside), `outside` beyond the border)."""
  x = np.asarray(targets, np.int64)
  if x.ndim != 2 or x.shape[1] != height * width:
    raise ValueError(f"targets must have shape [N, {height * width}] (height * width), "
                     f"got {x.shape}")
  img = x.reshape(-1, height, width)
  left = np.pad(img, ((0, 0), (0, 0), (1, 0)), constant_values=outside)[:, :, :-1]
  up = np.pad(img, ((0, 0), (1, 0), (0, 0)), constant_values=outside)[:, :-1, :]
  k = outside + 1
  pos = np.arange(height * width, dtype=np.int64).reshape(1, height, width)
  return ((pos * k + left) * k + up).reshape(x.shape), height * width * k * k


def word_mask(targets, boundary: int = 0) -> np.ndarray:
  """Mask of a word's predicted tokens: every target up to and including the first boundary."""
  t = np.asarray(targets)
  ended_before = np.cumsum(t == boundary, axis=1) - (t == boundary)
  return ended_before == 0
