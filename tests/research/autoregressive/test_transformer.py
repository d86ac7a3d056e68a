"""Tests for research.autoregressive.transformer (fixed keys; float32, atol 1e-5)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.autoregressive.decoding import decode
from research.autoregressive.transformer import (KVCache, TransformerConfig,
                                                 TransformerLM)

ATOL = 1e-5
V = 13
PAD = 0


def _config(**overrides):
  base = dict(vocab_size=V, max_len=24, dim=16, num_layers=2, num_heads=4)
  base.update(overrides)
  return TransformerConfig(**base)


CONFIGS = {
    "rope_rms_untied_gqa2": _config(num_kv_heads=2),
    "learned_layernorm_tied": _config(positions="learned", norm="layer",
                                      tie_embeddings=True),
}


def _model(config, seed=0):
  model = TransformerLM(config)
  return model, model.init(jax.random.key(seed))


def _tokens(shape, seed=1):
  return jax.random.randint(jax.random.key(seed), shape, 1, V, jnp.int32)


def _stepwise(model, params, tokens, lengths, cache_len):
  """Feed every row its tokens at positions 0..len - 1 (all rows in step, a
  finished row fed PAD at its frozen position, as decode does); logits [B, T, V]."""
  step = jax.jit(model.make_step_fn(params))
  batch, width = tokens.shape
  cache = model.init_cache(batch, cache_len)
  out = []
  for t in range(width):
    live = t < lengths
    feed = jnp.where(live, tokens[:, t], PAD)
    pos = jnp.where(live, t, lengths - 1).astype(jnp.int32)
    logits, cache = step(cache, feed, pos)
    out.append(logits)
  return jnp.stack(out, axis=1)


def _assert_valid_close(got, want, lengths):
  for i, n in enumerate(np.asarray(lengths)):
    np.testing.assert_allclose(got[i, :n], want[i, :n], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cached_steps_match_full_pass(name):
  model, params = _model(CONFIGS[name])
  lengths = jnp.array([7, 3, 5])
  tokens = _tokens((3, 7))
  full = jax.jit(model.apply)(params, tokens)
  assert full.shape == (3, 7, V) and full.dtype == jnp.float32
  stepped = _stepwise(model, params, tokens, lengths, cache_len=9)
  _assert_valid_close(stepped, full, lengths)


def test_key_mask_left_and_right_padding_match_unpadded_rows():
  model, params = _model(CONFIGS["rope_rms_untied_gqa2"])
  apply = jax.jit(model.apply)
  seqs = [np.asarray(_tokens((1, n), seed=n))[0] for n in (6, 2, 4)]
  width = 6
  left = np.full((3, width), PAD, np.int32)
  right = np.full((3, width), PAD, np.int32)
  for i, s in enumerate(seqs):
    left[i, width - len(s):] = s
    right[i, :len(s)] = s
  left_mask, right_mask = left != PAD, right != PAD
  left_out = apply(params, left, None, left_mask)
  right_out = apply(params, right, None, right_mask)
  assert np.all(np.isfinite(left_out))          # fully masked pad queries
  for i, s in enumerate(seqs):
    want = apply(params, s[None])[0]
    np.testing.assert_allclose(left_out[i, width - len(s):], want, atol=ATOL,
                               rtol=0)
    np.testing.assert_allclose(right_out[i, :len(s)], want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_prefill_then_steps_match_full_pass(name):
  model, params = _model(CONFIGS[name])
  prompt_lengths = jnp.array([4, 1, 3])
  prompt_width, extra = 4, 3
  seq = _tokens((3, prompt_width + extra), seed=2)
  prompt = jnp.where(jnp.arange(prompt_width)[None] < prompt_lengths[:, None],
                     seq[:, :prompt_width], PAD)
  cache = model.init_cache(3, prompt_width + extra)
  last, cache = jax.jit(model.make_prefill_fn(params))(cache, prompt,
                                                      prompt_lengths)
  full = jax.jit(model.apply)(params, seq)
  rows = jnp.arange(3)
  np.testing.assert_allclose(last, full[rows, prompt_lengths - 1], atol=ATOL,
                             rtol=0)
  step = jax.jit(model.make_step_fn(params))
  for n in range(extra):
    pos = prompt_lengths + n
    logits, cache = step(cache, seq[rows, pos], pos)
    np.testing.assert_allclose(logits, full[rows, pos], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_causality_by_jacobian_on_input_embeddings(name):
  model, params = _model(CONFIGS[name])
  length = 6
  x = model.embed(params, _tokens((1, length), seed=3))
  jac = jax.jacfwd(lambda e: model.apply_embeddings(params, e))(x)
  # d logits[0, i, :] / d x[0, j, :], summed in absolute value: [T, T]
  influence = np.asarray(jnp.abs(jac[0, :, :, 0]).sum(axis=(1, 3)))
  upper = np.triu(np.ones((length, length), bool), k=1)
  assert np.all(influence[upper] == 0.0)
  assert np.all(influence[~upper] > 0.0)


@pytest.mark.parametrize("num_kv_heads", [1, 4])
def test_grouped_query_heads(num_kv_heads):
  config = _config(num_heads=4, num_kv_heads=num_kv_heads, num_layers=1)
  model, params = _model(config)
  attn = params["blocks"][0]["attn"]
  assert attn["query"]["kernel"].shape == (16, 16)
  assert attn["key"]["kernel"].shape == (16, 4 * num_kv_heads)
  assert attn["value"]["kernel"].shape == (16, 4 * num_kv_heads)
  cache = model.init_cache(2, 5)
  assert isinstance(cache, KVCache)
  assert cache.keys.shape == cache.values.shape == (1, 2, 5, num_kv_heads, 4)
  lengths = jnp.array([5, 2])
  tokens = _tokens((2, 5), seed=4)
  full = jax.jit(model.apply)(params, tokens)
  assert full.shape == (2, 5, V)
  _assert_valid_close(_stepwise(model, params, tokens, lengths, 5), full,
                      lengths)


def test_decode_greedy_step_fn_and_prefill_fn_agree_with_full_pass():
  model, params = _model(CONFIGS["rope_rms_untied_gqa2"])
  prompt = _tokens((3, 4), seed=5)
  prompt_lengths = jnp.array([4, 2, 3])
  num_new = 5
  cache = model.init_cache(3, 4 + num_new)
  run = jax.jit(lambda fns, c, p, n: decode(
      jax.random.key(7), fns[0], c, p, n, max_new_tokens=num_new,
      temperature=0.0, prefill_fn=fns[1]), static_argnums=0)
  step_fn, prefill_fn = model.make_step_fn(params), model.make_prefill_fn(params)
  by_steps = run((step_fn, None), cache, prompt, prompt_lengths)
  by_prefill = run((step_fn, prefill_fn), cache, prompt, prompt_lengths)
  np.testing.assert_array_equal(by_steps.tokens, by_prefill.tokens)
  np.testing.assert_array_equal(by_steps.lengths, [num_new] * 3)
  # Reference: greedy continuation by repeated full passes over a right-padded
  # buffer (causal, so the padding after each row's end does not matter).
  apply = jax.jit(model.apply)
  rows = np.arange(3)
  buf = np.zeros((3, 4 + num_new), np.int32)
  buf[:, :4] = np.asarray(prompt)
  cur = np.asarray(prompt_lengths).copy()
  for _ in range(num_new):
    buf[rows, cur] = np.argmax(apply(params, buf)[rows, cur - 1], axis=-1)
    cur += 1
  for i, n in enumerate(np.asarray(prompt_lengths)):
    np.testing.assert_array_equal(by_steps.tokens[i], buf[i, n:n + num_new])


def test_jitted_step_fn_compiles_once():
  model, params = _model(CONFIGS["rope_rms_untied_gqa2"])
  step = jax.jit(chex.assert_max_traces(model.make_step_fn(params), n=1))
  cache = model.init_cache(2, 6)
  tokens = jnp.array([3, 4], jnp.int32)
  for t in range(6):
    logits, cache = step(cache, tokens, jnp.array([t, min(t, 2)], jnp.int32))
    tokens = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  assert logits.shape == (2, V)


@pytest.mark.parametrize("overrides, name", [
    (dict(dim=18), "dim"),                       # not divisible by num_heads = 4
    (dict(num_kv_heads=3), "num_kv_heads"),      # does not divide num_heads
    (dict(num_kv_heads=0), "num_kv_heads"),
    (dict(vocab_size=1), "vocab_size"),
    (dict(max_len=0), "max_len"),
    (dict(num_layers=0), "num_layers"),
    (dict(num_heads=0), "num_heads"),
    (dict(dim=12, num_heads=4), "dim"),          # head_dim 3 is odd: no RoPE
    (dict(mlp_ratio=0.0), "mlp_ratio"),
    (dict(norm="batch"), "norm"),
    (dict(positions="alibi"), "positions"),
    (dict(rope_base=1.0), "rope_base"),
    (dict(norm_eps=0.0), "norm_eps"),
    (dict(vocab_size=True), "vocab_size"),
    (dict(dropout=1.0), "dropout"),
    (dict(dropout=-0.1), "dropout"),
])
def test_bad_config_raises_naming_the_field(overrides, name):
  with pytest.raises(ValueError, match=name):
    _config(**overrides)


def test_prompt_longer_than_cache_raises():
  model, params = _model(_config(num_layers=1))
  prompt = _tokens((2, 6), seed=6)
  lengths = jnp.array([6, 3])
  short = model.init_cache(2, 5)
  with pytest.raises(ValueError, match="exceeds the cache's max_len"):
    model.make_prefill_fn(params)(short, prompt, lengths)
  with pytest.raises(ValueError, match="exceeds the cache's max_len"):
    decode(jax.random.key(0), model.make_step_fn(params), short, prompt,
           lengths, max_new_tokens=2, prefill_fn=model.make_prefill_fn(params))
  with pytest.raises(ValueError, match="max_len"):
    model.init_cache(2, 25)                      # above config.max_len = 24
  with pytest.raises(ValueError, match="max_len"):
    model.apply(params, _tokens((1, 25)))


def test_dropout_acts_only_with_a_key_and_keeps_causality():
  model, params = _model(_config(dropout=0.3))
  plain, _ = _model(_config(dropout=0.0))
  tokens = _tokens((2, 10))
  base = model.apply(params, tokens)
  np.testing.assert_array_equal(base, plain.apply(params, tokens))   # no key: no dropout
  a = model.apply(params, tokens, dropout_key=jax.random.key(1))
  b = model.apply(params, tokens, dropout_key=jax.random.key(2))
  assert float(jnp.max(jnp.abs(a - base))) > 1e-3 and float(jnp.max(jnp.abs(a - b))) > 1e-3
  np.testing.assert_array_equal(a, model.apply(params, tokens, dropout_key=jax.random.key(1)))
  # Causal with dropout on: changing token 6 leaves positions 0..5 as they were.
  changed = tokens.at[:, 6].set((tokens[:, 6] % (V - 1)) + 1)
  c = model.apply(params, changed, dropout_key=jax.random.key(1))
  np.testing.assert_allclose(c[:, :6], a[:, :6], atol=ATOL)
  # Rate 0 with a key is the deterministic pass.
  np.testing.assert_array_equal(plain.apply(params, tokens, dropout_key=jax.random.key(1)), base)


def test_inverted_dropout_keeps_the_mean():
  from research.autoregressive.transformer import _dropout
  x = jnp.ones((200_000,))
  y = _dropout(x, 0.25, jax.random.key(0))
  assert abs(float(jnp.mean(y)) - 1.0) < 0.01                   # 4.5 standard errors
  assert abs(float(jnp.mean(y == 0)) - 0.25) < 0.005
