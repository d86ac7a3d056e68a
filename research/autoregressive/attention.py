"""Multi-head causal self-attention with rotary positions and an explicit KV cache.

Scaled dot-product attention (Vaswani et al. 2017), softmax(q k^T / sqrt(d)) v,
with grouped-query heads (Ainslie et al. 2023: num_kv_heads key/value heads,
each shared by num_heads / num_kv_heads query heads; num_kv_heads = 1 is
multi-query attention, Shazeer 2019) and rotary position embeddings (RoPE, Su
et al. 2021): pairs (x_j, x_{j+h}) of q and k are rotated by the angle
position * base^(-j / h), h = head_dim / 2, so q . k depends on the positions
only through their difference.

Masks are boolean [B, T, S] (True: query t may attend to key s); a masked score
is replaced (not offset) by -1e30, so a query with no allowed key (a pad slot)
gets a finite uniform average instead of NaN, and masked keys get weight
exactly 0 otherwise. Caches are written at slot = position, one per row.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

_MASKED = -1e30


def rope(x: jax.Array, positions: jax.Array, base: float) -> jax.Array:
  """Rotary embedding of x [B, T, H, D] (D even) at positions [B, T] (Su et al. 2021).

  out_j = x_j cos(p w_j) - x_{j+h} sin(p w_j), out_{j+h} = x_{j+h} cos(p w_j) + x_j sin(p w_j),
  w_j = base^(-j / h), h = D / 2.
  """
  half = x.shape[-1] // 2
  freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions.astype(jnp.float32)[..., None] * freqs          # [B, T, h]
  cos, sin = jnp.cos(angles)[:, :, None], jnp.sin(angles)[:, :, None]
  x1, x2 = x[..., :half], x[..., half:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
  """softmax(q k^T / sqrt(D) masked) v with grouped heads.

  q [B, T, H, D], k and v [B, S, K, D] with K dividing H (query head h uses
  key/value head h // (H / K)), mask [B, T, S] bool. Returns [B, T, H, D].
  """
  batch, length, heads, depth = q.shape
  kv_heads = k.shape[2]
  q = q.reshape(batch, length, kv_heads, heads // kv_heads, depth)
  scores = jnp.einsum("btkgd,bskd->bkgts", q, k,
                      precision=jax.lax.Precision.HIGHEST) / jnp.sqrt(
                          jnp.float32(depth))
  scores = jnp.where(mask[:, None, None], scores, _MASKED)
  weights = jax.nn.softmax(scores, axis=-1)
  out = jnp.einsum("bkgts,bskd->btkgd", weights, v,
                   precision=jax.lax.Precision.HIGHEST)
  return out.reshape(batch, length, heads, depth)


def write_cache(cache: jax.Array, new: jax.Array, slots: jax.Array) -> jax.Array:
  """cache [B, S, K, D] with new [B, T, K, D] written at slots [B, T] (out of range: dropped)."""
  rows = jnp.arange(cache.shape[0])[:, None]
  return cache.at[rows, slots].set(new, mode="drop")


class Attention(nnx.Module):
  """Causal self-attention: projections, RoPE (optional), grouped heads, output projection."""

  def __init__(self, dim: int, num_heads: int, num_kv_heads: int, *,
               use_rope: bool, rope_base: float, rngs: nnx.Rngs):
    self.num_heads = num_heads
    self.num_kv_heads = num_kv_heads
    self.head_dim = dim // num_heads
    self.use_rope = use_rope
    self.rope_base = rope_base
    linear = lambda a, b: nnx.Linear(a, b, use_bias=False, rngs=rngs,
                                     precision=jax.lax.Precision.HIGHEST)
    self.query = linear(dim, num_heads * self.head_dim)
    self.key = linear(dim, num_kv_heads * self.head_dim)
    self.value = linear(dim, num_kv_heads * self.head_dim)
    self.out = linear(num_heads * self.head_dim, dim)

  def __call__(self, x: jax.Array, positions: jax.Array, mask: jax.Array,
               cache: tuple[jax.Array, jax.Array] | None = None):
    """Attention of x [B, T, dim] at positions [B, T].

    Without cache: keys are x's own, mask [B, T, T]. With cache (keys, values)
    [B, S, K, D]: x's keys and values are written at slot = position first,
    and mask is [B, T, S] over the cache. Returns (out [B, T, dim], (keys, values)):
    x's own keys/values, or the updated cache.
    """
    batch, length, _ = x.shape
    q = self.query(x).reshape(batch, length, self.num_heads, self.head_dim)
    k = self.key(x).reshape(batch, length, self.num_kv_heads, self.head_dim)
    v = self.value(x).reshape(batch, length, self.num_kv_heads, self.head_dim)
    if self.use_rope:
      q = rope(q, positions, self.rope_base)
      k = rope(k, positions, self.rope_base)
    if cache is not None:
      k = write_cache(cache[0], k, positions)
      v = write_cache(cache[1], v, positions)
    out = attend(q, k, v, mask).reshape(batch, length, -1)
    return self.out(out), (k, v)
