"""A decoder-only transformer language model (Flax NNX, functional core).

Pre-norm blocks (Xiong et al. 2020): h <- h + Attn(Norm(h)), h <- h + MLP(Norm(h)),
then a final norm and an output head (optionally tied to the token embedding,
Press & Wolf 2017). Norms are RMSNorm (Zhang & Sennrich 2019) or LayerNorm;
positions are rotary (RoPE, Su et al. 2021) or a learned table added to the
token embeddings; attention is causal with grouped-query heads
(``research.autoregressive.attention``).

``TransformerLM(config)`` is the functional core the rest of the code sees:

  init(key) -> params                                   plain nested dict
  apply(params, tokens[B, T], positions=None, key_mask=None) -> logits[B, T, V]
  apply_embeddings(params, x[B, T, dim], positions=None, key_mask=None) -> logits
  init_cache(batch, max_len=None) -> KVCache
  make_step_fn(params)    -> step_fn(cache, tokens[B], positions[B]) -> (logits[B, V], cache)
  make_prefill_fn(params) -> prefill_fn(cache, prompt[B, P], prompt_lengths[B])
                                                        -> (last_logits[B, V], cache)
  make_chunk_fn(params)   -> chunk_fn(cache, tokens[B, K], positions[B, K])
                                                        -> (logits[B, K, V], cache)

The step and prefill functions follow the contract of
``research.autoregressive.decoding.decode``. The decode state is the ``KVCache`` alone:
keys and values of the token at position p sit in cache slot p, and a query at
position p attends to slots 0..p, so no other bookkeeping is needed (slots past
p may hold stale or pad entries; they are masked, then overwritten when reached).
Positions fed to ``step_fn`` must be < the cache's max_len: under ``jit`` a
larger one cannot be refused, and its write is dropped.
"""

from __future__ import annotations

import dataclasses
import numbers
import typing

import jax
import jax.numpy as jnp
from flax import nnx

from research.autoregressive import attention

NORMS = ("rms", "layer")
POSITIONS = ("rope", "learned")


def _fail(name, allowed, value):
  raise ValueError(f"TransformerConfig: {name} must be {allowed}, got {value!r}")


def _is_int(value):
  return isinstance(value, (numbers.Integral,)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Shape and options of the model; every field is checked on construction.

  num_kv_heads = None means num_heads (plain multi-head attention); the MLP
  hidden width is round(mlp_ratio * dim); max_len bounds positions and caches.
  dropout: the rate of the residual dropout of GPT-2 (Radford et al. 2019;
  Srivastava et al. 2014), on the input embeddings and on each attention and MLP
  output before it joins the residual stream; active only when a dropout key is
  given (training), never in cached decoding.
  """
  vocab_size: int
  max_len: int
  dim: int
  num_layers: int
  num_heads: int
  num_kv_heads: int | None = None
  mlp_ratio: float = 4.0
  norm: str = "rms"
  positions: str = "rope"
  tie_embeddings: bool = False
  rope_base: float = 10_000.0
  norm_eps: float = 1e-6
  dropout: float = 0.0

  def __post_init__(self):
    for name, low in (("vocab_size", 2), ("max_len", 1), ("dim", 1),
                      ("num_layers", 1), ("num_heads", 1)):
      value = getattr(self, name)
      if not _is_int(value) or value < low:
        _fail(name, f"an int >= {low}", value)
    if self.dim % self.num_heads:
      _fail("dim", f"divisible by num_heads = {self.num_heads}", self.dim)
    kv = self.num_kv_heads
    if kv is not None and (not _is_int(kv) or kv < 1 or self.num_heads % kv):
      _fail("num_kv_heads", f"None or an int >= 1 dividing num_heads = "
            f"{self.num_heads}", kv)
    if (isinstance(self.mlp_ratio, bool)
        or not isinstance(self.mlp_ratio, numbers.Real)
        or not self.mlp_ratio > 0 or round(self.mlp_ratio * self.dim) < 1):
      _fail("mlp_ratio", "a real > 0 with round(mlp_ratio * dim) >= 1",
            self.mlp_ratio)
    if self.norm not in NORMS:
      _fail("norm", f"one of {NORMS}", self.norm)
    if self.positions not in POSITIONS:
      _fail("positions", f"one of {POSITIONS}", self.positions)
    if not isinstance(self.tie_embeddings, bool):
      _fail("tie_embeddings", "a bool", self.tie_embeddings)
    if self.positions == "rope":
      if self.head_dim % 2:
        _fail("dim", f"such that dim / num_heads is even for RoPE (head_dim = "
              f"{self.head_dim})", self.dim)
      if isinstance(self.rope_base, bool) or not isinstance(
          self.rope_base, numbers.Real) or not self.rope_base > 1:
        _fail("rope_base", "a real > 1", self.rope_base)
    if isinstance(self.norm_eps, bool) or not isinstance(
        self.norm_eps, numbers.Real) or not self.norm_eps > 0:
      _fail("norm_eps", "a real > 0", self.norm_eps)
    if isinstance(self.dropout, bool) or not isinstance(
        self.dropout, numbers.Real) or not 0 <= self.dropout < 1:
      _fail("dropout", "a real in [0, 1)", self.dropout)

  @property
  def head_dim(self) -> int:
    return self.dim // self.num_heads

  @property
  def kv_heads(self) -> int:
    return self.num_heads if self.num_kv_heads is None else self.num_kv_heads


class KVCache(typing.NamedTuple):
  """Keys and values of every layer: [num_layers, B, max_len, num_kv_heads, head_dim]."""
  keys: jax.Array
  values: jax.Array


def _norm(config, rngs):
  if config.norm == "rms":
    return nnx.RMSNorm(config.dim, epsilon=config.norm_eps, rngs=rngs)
  return nnx.LayerNorm(config.dim, epsilon=config.norm_eps, rngs=rngs)


class Block(nnx.Module):
  """Pre-norm block: h + Attn(Norm(h)), then h + MLP(Norm(h)) with a GELU MLP."""

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    hidden = round(config.mlp_ratio * config.dim)
    self.attn_norm = _norm(config, rngs)
    self.attn = attention.Attention(
        config.dim, config.num_heads, config.kv_heads,
        use_rope=config.positions == "rope", rope_base=config.rope_base,
        rngs=rngs)
    self.mlp_norm = _norm(config, rngs)
    linear = lambda a, b: nnx.Linear(a, b, rngs=rngs,
                                     precision=jax.lax.Precision.HIGHEST)
    self.mlp_in = linear(config.dim, hidden)
    self.mlp_out = linear(hidden, config.dim)

  def __call__(self, h, positions, mask, cache=None, dropout=None):
    """dropout: None or (rate, key): residual dropout of both branch outputs."""
    drop = (lambda x, i: x) if dropout is None else (
        lambda x, i: _dropout(x, dropout[0], jax.random.fold_in(dropout[1], i)))
    out, kv = self.attn(self.attn_norm(h), positions, mask, cache)
    h = h + drop(out, 0)
    h = h + drop(self.mlp_out(jax.nn.gelu(self.mlp_in(self.mlp_norm(h)))), 1)
    return h, kv


def _dropout(x, rate, key):
  """Inverted dropout: zero each entry with probability rate, scale the rest by 1 / (1 - rate)."""
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0)


class Transformer(nnx.Module):
  """Decoder-only transformer: embeddings, pre-norm blocks, final norm, output head."""

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    self.config = config
    init = nnx.initializers.normal(stddev=0.02)
    self.embed = nnx.Embed(config.vocab_size, config.dim, embedding_init=init,
                           rngs=rngs)
    if config.positions == "learned":
      self.position_embed = nnx.Embed(config.max_len, config.dim,
                                      embedding_init=init, rngs=rngs)
    self.blocks = nnx.List([Block(config, rngs=rngs)
                            for _ in range(config.num_layers)])
    self.final_norm = _norm(config, rngs)
    if not config.tie_embeddings:
      self.head = nnx.Linear(config.dim, config.vocab_size, use_bias=False,
                             rngs=rngs, precision=jax.lax.Precision.HIGHEST)

  def embed_tokens(self, tokens):
    return self.embed(tokens)

  def _logits(self, h):
    h = self.final_norm(h)
    if self.config.tie_embeddings:
      return jnp.einsum("btd,vd->btv", h, self.embed.embedding[...],
                        precision=jax.lax.Precision.HIGHEST)
    return self.head(h)

  def _inputs(self, x, positions):
    if self.config.positions == "learned":
      x = x + self.position_embed(positions)
    return x

  def from_embeddings(self, x, positions, key_mask, dropout_key=None):
    """Full causal pass: slot t attends to slots s <= t with key_mask[s] True;
    residual dropout (config.dropout) when dropout_key is given."""
    length = x.shape[1]
    causal = jnp.tril(jnp.ones((length, length), jnp.bool_))
    mask = causal[None] & key_mask[:, None, :]
    h = self._inputs(x, positions)
    rate = self.config.dropout
    use = dropout_key is not None and rate > 0
    if use:
      h = _dropout(h, rate, jax.random.fold_in(dropout_key, len(self.blocks)))
    for i, block in enumerate(self.blocks):
      h, _ = block(h, positions, mask,
                   dropout=(rate, jax.random.fold_in(dropout_key, i)) if use else None)
    return self._logits(h)

  def __call__(self, tokens, positions, key_mask, dropout_key=None):
    return self.from_embeddings(self.embed_tokens(tokens), positions, key_mask, dropout_key)

  def cached(self, tokens, positions, cache: KVCache):
    """Tokens [B, T] at positions [B, T], written at slot = position; a query
    at position p attends to the cache's slots 0..p. Returns (logits, cache)."""
    slots = jnp.arange(cache.keys.shape[2])
    mask = slots[None, None, :] <= positions[:, :, None]
    h = self._inputs(self.embed_tokens(tokens), positions)
    keys, values = [], []
    for layer, block in enumerate(self.blocks):
      h, (k, v) = block(h, positions, mask,
                        (cache.keys[layer], cache.values[layer]))
      keys.append(k)
      values.append(v)
    return self._logits(h), KVCache(jnp.stack(keys), jnp.stack(values))


def _check_int_array(name, value, ndim):
  arr = jnp.asarray(value)
  if arr.ndim != ndim or not jnp.issubdtype(arr.dtype, jnp.integer):
    raise ValueError(f"TransformerLM: {name} must be an int array with {ndim} "
                     f"dims, got shape {arr.shape} dtype {arr.dtype}")
  return arr.astype(jnp.int32)


class TransformerLM:
  """Functional core of ``Transformer``: params are a plain pytree (module docstring)."""

  def __init__(self, config: TransformerConfig):
    if not isinstance(config, TransformerConfig):
      raise ValueError(f"TransformerLM: config must be a TransformerConfig, got "
                       f"{type(config).__name__}")
    self.config = config
    abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
    self._graphdef, _ = nnx.split(abstract)

  def _module(self, params) -> Transformer:
    return nnx.merge(self._graphdef, nnx.State(params))

  def init(self, key) -> dict:
    """Fresh parameters, a nested dict of float32 arrays."""
    module = Transformer(self.config, rngs=nnx.Rngs(params=key))
    return nnx.to_pure_dict(nnx.state(module))

  def _positions_and_mask(self, shape, positions, key_mask):
    batch, length = shape
    if length > self.config.max_len:
      raise ValueError(f"TransformerLM: sequence length {length} exceeds "
                       f"max_len = {self.config.max_len}")
    if key_mask is None:
      key_mask = jnp.ones(shape, jnp.bool_)
    else:
      key_mask = jnp.asarray(key_mask)
      if key_mask.shape != shape or key_mask.dtype != jnp.bool_:
        raise ValueError(f"TransformerLM: key_mask must be a bool array of "
                         f"shape {shape}, got {key_mask.shape} {key_mask.dtype}")
    if positions is None:
      positions = jnp.maximum(jnp.cumsum(key_mask, axis=1) - 1, 0)
    positions = _check_int_array("positions", positions, 2)
    if positions.shape != shape:
      raise ValueError(f"TransformerLM: positions must have shape {shape}, got "
                       f"{positions.shape}")
    return positions, key_mask

  def embed(self, params, tokens) -> jax.Array:
    """Token embeddings [B, T, dim] of tokens [B, T] (the input of apply_embeddings)."""
    return self._module(params).embed_tokens(_check_int_array("tokens", tokens, 2))

  def apply_embeddings(self, params, x, positions=None, key_mask=None, dropout_key=None):
    """Full causal pass from input embeddings x [B, T, dim]; see ``apply``."""
    x = jnp.asarray(x)
    if x.ndim != 3 or x.shape[2] != self.config.dim:
      raise ValueError(f"TransformerLM: x must have shape [B, T, "
                       f"{self.config.dim}], got {x.shape}")
    positions, key_mask = self._positions_and_mask(x.shape[:2], positions,
                                                   key_mask)
    return self._module(params).from_embeddings(x, positions, key_mask, dropout_key)

  def apply(self, params, tokens, positions=None, key_mask=None, dropout_key=None):
    """Logits [B, T, V] of the full causal pass over tokens [B, T].

    key_mask [B, T] bool (default all True) marks real tokens: no slot attends
    to a pad slot, so left- or right-padded rows give the logits of their
    unpadded sequences (pad slots' own logits are meaningless). positions [B, T]
    default to the index among the row's real tokens, max(cumsum(key_mask) - 1, 0).
    dropout_key: a PRNG key turns on the residual dropout of config.dropout (training).
    """
    tokens = _check_int_array("tokens", tokens, 2)
    positions, key_mask = self._positions_and_mask(tokens.shape, positions,
                                                   key_mask)
    return self._module(params)(tokens, positions, key_mask, dropout_key)

  def init_cache(self, batch: int, max_len: int | None = None) -> KVCache:
    """Zero KV cache for batch rows and positions 0..max_len - 1 (default config.max_len)."""
    max_len = self.config.max_len if max_len is None else max_len
    if not _is_int(batch) or batch < 1:
      raise ValueError(f"TransformerLM.init_cache: batch must be an int >= 1, "
                       f"got {batch!r}")
    if not _is_int(max_len) or not 1 <= max_len <= self.config.max_len:
      raise ValueError(f"TransformerLM.init_cache: max_len must be an int in "
                       f"[1, {self.config.max_len}] (config.max_len), got "
                       f"{max_len!r}")
    c = self.config
    shape = (c.num_layers, batch, max_len, c.kv_heads, c.head_dim)
    return KVCache(jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32))

  def make_step_fn(self, params):
    """step_fn(cache, tokens[B], positions[B]) -> (logits[B, V], cache)."""

    def step_fn(cache, tokens, positions):
      tokens = _check_int_array("tokens", tokens, 1)
      positions = _check_int_array("positions", positions, 1)
      batch = cache.keys.shape[1]
      if tokens.shape != (batch,) or positions.shape != (batch,):
        raise ValueError(f"TransformerLM step_fn: tokens and positions must "
                         f"have shape ({batch},) (the cache's batch), got "
                         f"{tokens.shape} and {positions.shape}")
      logits, cache = self._module(params).cached(tokens[:, None],
                                                  positions[:, None], cache)
      return logits[:, 0], cache

    return step_fn

  def make_prefill_fn(self, params):
    """prefill_fn(cache, prompt[B, P], prompt_lengths[B]) -> (last_logits[B, V], cache).

    Writes the whole prompt at slots 0..P - 1 (right padding past a row's
    length is harmless: causal, and overwritten by the steps that follow) and
    returns each row's logits at position prompt_lengths - 1.
    """

    def prefill_fn(cache, prompt, prompt_lengths):
      prompt = _check_int_array("prompt", prompt, 2)
      lengths = _check_int_array("prompt_lengths", prompt_lengths, 1)
      batch, width = prompt.shape
      if batch != cache.keys.shape[1] or lengths.shape != (batch,):
        raise ValueError(f"TransformerLM prefill_fn: prompt must have "
                         f"{cache.keys.shape[1]} rows (the cache's batch) and "
                         f"prompt_lengths shape ({batch},), got {prompt.shape} "
                         f"and {lengths.shape}")
      if width > cache.keys.shape[2]:
        raise ValueError(f"TransformerLM prefill_fn: prompt length {width} "
                         f"exceeds the cache's max_len = {cache.keys.shape[2]}")
      positions = jnp.broadcast_to(jnp.arange(width, dtype=jnp.int32),
                                   (batch, width))
      logits, cache = self._module(params).cached(prompt, positions, cache)
      last = jnp.clip(lengths - 1, 0, width - 1)
      return logits[jnp.arange(batch), last], cache

    return prefill_fn

  def make_chunk_fn(self, params):
    """chunk_fn(cache, tokens[B, K], positions[B, K]) -> (logits[B, K, V], cache).

    K tokens per row in one call (the verify call of speculative decoding):
    written at slot = position, then the query at position p attends to slots
    0..p, so logits[:, k] are those of the sequence through tokens[:, k] given
    the cache's earlier slots. Entries past the sequence the caller keeps
    (rejected draft tokens) need no rollback as long as each later call starts
    at or before the first of them: no query reads a slot past its own
    position, and every slot up to it is rewritten before it is read.
    """

    def chunk_fn(cache, tokens, positions):
      tokens = _check_int_array("tokens", tokens, 2)
      positions = _check_int_array("positions", positions, 2)
      batch = cache.keys.shape[1]
      if tokens.shape[0] != batch or positions.shape != tokens.shape:
        raise ValueError(f"TransformerLM chunk_fn: tokens and positions must "
                         f"have the same shape ({batch}, K) (the cache's "
                         f"batch), got {tokens.shape} and {positions.shape}")
      return self._module(params).cached(tokens, positions, cache)

    return chunk_fn
