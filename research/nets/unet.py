"""U-Net for image diffusion / flow matching (DDPM, improved DDPM, ADM style; Flax NNX).

Architecture (Ho et al. 2020, "Denoising Diffusion Probabilistic Models";
Nichol & Dhariwal 2021, "Improved DDPM"; Dhariwal & Nichol 2021, "Diffusion
Models Beat GANs" (ADM)), on NHWC images x of shape (B, H, W, C):

  emb   = MLP(sinusoidal(time_scale * t) [+ P guidance_scale_embedding(w)]) [+ Embed(y)]
                                                           MLP = Linear, SiLU, Linear
  h     = Conv3x3(x)
  down  : per level l (channels * channel_mult[l]): num_res_blocks ResBlocks, each
          followed by self-attention when the level's height H / 2^l is listed in
          attention_resolutions; then a stride-2 Conv3x3 (not after the last level).
          Every block's output is kept as a skip connection.
  mid   : ResBlock, self-attention, ResBlock
  up    : per level (reversed): num_res_blocks + 1 ResBlocks on concat(h, skip),
          attention as in the down path, then nearest x2 + Conv3x3 (not at level 0)
  out   = Conv3x3(SiLU(GroupNorm(h)))                      zero-initialised

  ResBlock(h, emb) = skip(h) + Conv3x3(Dropout(SiLU(GN(Conv3x3(SiLU(GN(h))) + W SiLU(emb)))))
  Attention(h)     = h + Proj(MultiHeadSelfAttention(GN(h)))    over the H*W positions

As in DDPM/ADM the last conv of each ResBlock, the attention output projection
and the final conv start at zero, so the initial network outputs exactly 0
and each block starts as the identity. `skip` is a 1x1 conv when the channel
count changes, else the identity.

Class conditioning (classifier-free guidance, Ho & Salimans 2022): with
num_classes = K > 0, labels y are integers in [0, K]; index K is the null
class (the unconditional model), and y=None means every example is null.
Dropout acts only when a `dropout_key` is given (training; ResBlock i draws
its mask from fold_in(dropout_key, i)); without it the network is deterministic. There is no batch norm and no mutable state: the
parameters are the whole state, so `research.nets.mlp.functional` gives
(params, apply) for jit, vmap over stacked seeds, sharding and checkpoints.
Parameters may be of any float dtype; the computation runs in the promoted
dtype of the inputs and parameters (attention softmax in float32 at least).

DDPM's CIFAR-10 setting (channels=128, channel_mult=(1, 2, 2, 2), two res
blocks, attention at 16) has 35.7M parameters here, as in the paper.

Guidance-scale conditioning (optional, off by default; latent consistency models, Luo et
al. 2023): with guidance_embed_dim = d > 0 the network takes w (shape () or (B,)), embeds
it with `guidance_scale_embedding` (diffusers' get_guidance_scale_embedding: sinusoids of
1000 w) and adds the bias-free projection P (d -> channels, zero-initialised) to the
sinusoidal time features before the time MLP, where diffusers' TimestepEmbedding adds its
`cond_proj(timestep_cond)`. P starts at zero, so a network built with it and loaded with
the weights of one without it computes exactly the same function at every w (an LCM
student initialised from its teacher). With d = 0 (the default) there is no P and the
parameter tree, the outputs and the PyTorch twin are those of the plain U-Net.

Time: t has shape () or (B,) and is only embedded (time_scale * t feeds the
sinusoid), so any convention works; e.g. time_scale = 1000 for t in [0, 1].
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from research.nets.mlp import sinusoidal_embedding

__all__ = ["UNet", "ResBlock", "SelfAttention", "guidance_scale_embedding"]

_GN_EPS = 1e-5  # PyTorch's GroupNorm default, so the peer benchmark network matches


def _group_norm(features: int, num_groups: int, rngs: nnx.Rngs) -> nnx.GroupNorm:
  return nnx.GroupNorm(features, num_groups=num_groups, epsilon=_GN_EPS,
                       use_fast_variance=False, rngs=rngs)


def _conv3(cin: int, cout: int, rngs: nnx.Rngs, *, stride: int = 1, zero: bool = False) -> nnx.Conv:
  kwargs = {"kernel_init": nnx.initializers.zeros} if zero else {}
  return nnx.Conv(cin, cout, (3, 3), strides=stride, padding=((1, 1), (1, 1)), rngs=rngs, **kwargs)


def _dropout(key: jax.Array | None, h: jax.Array, rate: float) -> jax.Array:
  """Inverted dropout h * m / (1 - rate), m ~ Bernoulli(1 - rate); identity without a key."""
  if key is None or rate == 0.0:
    return h
  keep = jax.random.bernoulli(key, 1.0 - rate, h.shape)
  return jnp.where(keep, h / jnp.asarray(1.0 - rate, h.dtype), jnp.zeros((), h.dtype))


def guidance_scale_embedding(w: jax.Array, dim: int) -> jax.Array:
  """Fourier features of a guidance scale w (LCM; diffusers' get_guidance_scale_embedding).

  emb(w) = [sin(1000 w f_0), ..., sin(1000 w f_{h-1}), cos(1000 w f_0), ..., cos(...)],
  f_j = 10000^(-j / (h - 1)), h = dim // 2 (sines first, unlike `sinusoidal_embedding`;
  a zero column is appended for odd dim). w has shape () or (B,); returns w.shape + (dim,).
  """
  if isinstance(dim, bool) or not isinstance(dim, int) or dim < 4:
    raise ValueError(f"dim must be an integer >= 4, got {dim!r}")
  half = dim // 2
  freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / (half - 1))
  args = 1000.0 * jnp.asarray(w, jnp.float32)[..., None] * freqs
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
  if dim % 2:
    emb = jnp.concatenate([emb, jnp.zeros(emb.shape[:-1] + (1,), emb.dtype)], axis=-1)
  return emb


class ResBlock(nnx.Module):
  """Residual block: skip(h) + conv2(drop(act(GN(conv1(act(GN(h))) + W act(emb)))))."""

  def __init__(self, in_channels: int, out_channels: int, emb_dim: int, *, num_groups: int,
               dropout: float, rngs: nnx.Rngs):
    self.norm1 = _group_norm(in_channels, num_groups, rngs)
    self.conv1 = _conv3(in_channels, out_channels, rngs)
    self.emb_proj = nnx.Linear(emb_dim, out_channels, rngs=rngs)
    self.norm2 = _group_norm(out_channels, num_groups, rngs)
    self.conv2 = _conv3(out_channels, out_channels, rngs, zero=True)
    self.skip = (nnx.Conv(in_channels, out_channels, (1, 1), rngs=rngs)
                 if in_channels != out_channels else None)
    self.dropout = float(dropout)

  def __call__(self, h: jax.Array, emb: jax.Array,
               dropout_key: jax.Array | None = None) -> jax.Array:
    """h (B, H, W, in), emb (B, emb_dim) -> (B, H, W, out)."""
    r = self.conv1(nnx.silu(self.norm1(h)))
    r = r + self.emb_proj(nnx.silu(emb))[:, None, None, :]
    r = _dropout(dropout_key, nnx.silu(self.norm2(r)), self.dropout)
    r = self.conv2(r)
    return (h if self.skip is None else self.skip(h)) + r


class SelfAttention(nnx.Module):
  """h + Proj(softmax(Q K^T / sqrt(d)) V), multi-head over the H*W positions, on GN(h)."""

  def __init__(self, channels: int, *, num_heads: int, num_groups: int, rngs: nnx.Rngs):
    self.num_heads = num_heads
    self.norm = _group_norm(channels, num_groups, rngs)
    self.qkv = nnx.Linear(channels, 3 * channels, rngs=rngs)
    self.proj = nnx.Linear(channels, channels, kernel_init=nnx.initializers.zeros, rngs=rngs)

  def __call__(self, h: jax.Array) -> jax.Array:
    """h (B, H, W, C) -> (B, H, W, C)."""
    b, hh, ww, c = h.shape
    q, k, v = jnp.split(self.qkv(self.norm(h)).reshape(b, hh * ww, 3 * c), 3, axis=-1)
    heads = lambda a: a.reshape(b, hh * ww, self.num_heads, c // self.num_heads)
    q, k, v = heads(q), heads(k), heads(v)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(c // self.num_heads)
    weights = jax.nn.softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v).reshape(b, hh, ww, c)
    return h + self.proj(out)


class _Level(nnx.Module):
  """One resolution of the down or up path: ResBlocks, optional attention, optional resampling."""

  def __init__(self, blocks, attentions, resample):
    self.blocks = nnx.List(blocks)
    self.attentions = nnx.List(attentions)
    self.resample = resample


def _upsample(h: jax.Array) -> jax.Array:
  return jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)


def _positive_int(name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
  return value


class UNet(nnx.Module):
  """eps / x0 / v / velocity network f(x, t, y) on NHWC images (DDPM / ADM U-Net; module doc)."""

  def __init__(self, *, image_shape: Sequence[int], out_channels: int | None = None,
               channels: int = 64, channel_mult: Sequence[int] = (1, 2, 2),
               num_res_blocks: int = 2, attention_resolutions: Sequence[int] = (16,),
               num_heads: int = 1, dropout: float = 0.0, num_classes: int = 0,
               time_dim: int | None = None, time_scale: float = 1.0, num_groups: int = 8,
               guidance_embed_dim: int = 0, rngs: nnx.Rngs):
    if len(tuple(image_shape)) != 3:
      raise ValueError(f"image_shape must be (H, W, C), got {image_shape!r}")
    height, width, in_channels = (_positive_int("image_shape", int(d)) for d in image_shape)
    out_channels = (in_channels if out_channels is None
                    else _positive_int("out_channels", out_channels))
    channels = _positive_int("channels", channels)
    if channels % 2:
      raise ValueError(f"channels must be even (it is the sinusoidal embedding width), "
                       f"got {channels}")
    channel_mult = tuple(channel_mult)
    if not channel_mult:
      raise ValueError(f"channel_mult must be a non-empty list of positive integers, "
                       f"got {channel_mult}")
    for m in channel_mult:
      _positive_int("channel_mult", m)
    num_res_blocks = _positive_int("num_res_blocks", num_res_blocks)
    factor = 2 ** (len(channel_mult) - 1)
    if height % factor or width % factor:
      raise ValueError(f"image_shape {tuple(image_shape)}: H and W must be divisible by "
                       f"2**(len(channel_mult) - 1) = {factor} (channel_mult={channel_mult})")
    attention_resolutions = tuple(attention_resolutions)
    for r in attention_resolutions:
      _positive_int("attention_resolutions", r)
    num_heads = _positive_int("num_heads", num_heads)
    if not 0.0 <= dropout < 1.0:
      raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
      raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
    time_dim = 4 * channels if time_dim is None else _positive_int("time_dim", time_dim)
    num_groups = _positive_int("num_groups", num_groups)
    if (isinstance(guidance_embed_dim, bool) or not isinstance(guidance_embed_dim, int)
        or guidance_embed_dim < 0 or 0 < guidance_embed_dim < 4):
      raise ValueError(f"guidance_embed_dim must be 0 (off) or an integer >= 4, "
                       f"got {guidance_embed_dim!r}")
    if channels % num_groups:
      raise ValueError(f"num_groups={num_groups} must divide channels={channels}")
    attended = {channels * m for level, m in enumerate(channel_mult)
                if height // 2 ** level in attention_resolutions} | {channels * channel_mult[-1]}
    for c in sorted(attended):
      if c % num_heads:
        raise ValueError(f"num_heads={num_heads} must divide the channel count {c} of every "
                         f"attention layer")

    self.image_shape = (height, width, in_channels)
    self.out_channels = out_channels
    self.num_classes = num_classes
    self.time_scale = float(time_scale)
    self.channels = channels
    self.attention_levels = tuple(level for level in range(len(channel_mult))
                                  if height // 2 ** level in attention_resolutions)
    block = lambda cin, cout: ResBlock(cin, cout, time_dim, num_groups=num_groups,
                                       dropout=dropout, rngs=rngs)
    attention = lambda c: SelfAttention(c, num_heads=num_heads, num_groups=num_groups, rngs=rngs)

    self.time_in = nnx.Linear(channels, time_dim, rngs=rngs)
    self.time_out = nnx.Linear(time_dim, time_dim, rngs=rngs)
    self.label_embed = (nnx.Embed(num_classes + 1, time_dim, rngs=rngs,
                                  embedding_init=nnx.initializers.normal(1.0))
                        if num_classes else None)
    self.conv_in = _conv3(in_channels, channels, rngs)

    ch, skip_channels, down = channels, [channels], []
    for level, mult in enumerate(channel_mult):
      blocks, attns = [], []
      for _ in range(num_res_blocks):
        blocks.append(block(ch, channels * mult))
        ch = channels * mult
        if level in self.attention_levels:
          attns.append(attention(ch))
        skip_channels.append(ch)
      last = level == len(channel_mult) - 1
      down.append(_Level(blocks, attns, None if last else _conv3(ch, ch, rngs, stride=2)))
      if not last:
        skip_channels.append(ch)
    self.down = nnx.List(down)
    self.mid_block1 = block(ch, ch)
    self.mid_attention = attention(ch)
    self.mid_block2 = block(ch, ch)
    up = []
    for level, mult in reversed(list(enumerate(channel_mult))):
      blocks, attns = [], []
      for _ in range(num_res_blocks + 1):
        blocks.append(block(ch + skip_channels.pop(), channels * mult))
        ch = channels * mult
        if level in self.attention_levels:
          attns.append(attention(ch))
      up.append(_Level(blocks, attns, _conv3(ch, ch, rngs) if level else None))
    self.up = nnx.List(up)
    self.norm_out = _group_norm(ch, num_groups, rngs)
    self.conv_out = _conv3(ch, out_channels, rngs, zero=True)
    # Built last, so the other parameters draw the same keys with or without it.
    self.guidance_embed_dim = guidance_embed_dim
    self.guidance_proj = (nnx.Linear(guidance_embed_dim, channels, use_bias=False,
                                     kernel_init=nnx.initializers.zeros, rngs=rngs)
                          if guidance_embed_dim else None)

  def _embedding(self, t: jax.Array, y: jax.Array | None, batch: int, dtype,
                 w: jax.Array | None = None) -> jax.Array:
    t = jnp.asarray(t)
    if t.shape not in ((), (batch,)):
      raise ValueError(f"t must have shape () or (batch,) = ({batch},), got {t.shape}")
    t = jnp.broadcast_to(t.astype(jnp.float32), (batch,))
    features = sinusoidal_embedding(self.time_scale * t, self.channels).astype(dtype)
    if self.guidance_proj is None:
      if w is not None:
        raise ValueError("w (a guidance scale) needs a network built with guidance_embed_dim "
                         "> 0; this one has guidance_embed_dim=0")
    else:
      if w is None:
        raise ValueError(f"w (the guidance scale, shape () or (batch,)) is required: the "
                         f"network was built with guidance_embed_dim="
                         f"{self.guidance_embed_dim}")
      w = jnp.asarray(w)
      if w.shape not in ((), (batch,)):
        raise ValueError(f"w must have shape () or (batch,) = ({batch},), got {w.shape}")
      w = jnp.broadcast_to(w.astype(jnp.float32), (batch,))
      w_features = guidance_scale_embedding(w, self.guidance_embed_dim).astype(dtype)
      features = features + self.guidance_proj(w_features).astype(dtype)
    emb = self.time_out(nnx.silu(self.time_in(features)))
    if self.label_embed is None:
      if y is not None:
        raise ValueError("y (class labels) needs a network built with num_classes > 0; "
                         "this one has num_classes=0")
      return emb
    if y is None:
      y = jnp.full((batch,), self.num_classes, jnp.int32)
    y = jnp.asarray(y)
    if y.shape != (batch,) or not jnp.issubdtype(y.dtype, jnp.integer):
      raise ValueError(f"y must be integer labels of shape (batch,) = ({batch},), "
                       f"got shape {y.shape} and dtype {y.dtype}")
    if not isinstance(y, jax.core.Tracer):   # concrete labels: check in numpy (jnp ops on them
      labels = np.asarray(y)                 # would be staged inside an outer trace, e.g. a scan)
      if np.any((labels < 0) | (labels > self.num_classes)):
        raise ValueError(f"y must lie in [0, num_classes] = [0, {self.num_classes}] "
                         f"({self.num_classes} is the null class), got min {labels.min()} "
                         f"and max {labels.max()}")
    return emb + self.label_embed(y).astype(emb.dtype)

  def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array | None = None, *,
               dropout_key: jax.Array | None = None, w: jax.Array | None = None) -> jax.Array:
    """x (B, H, W, C), t () or (B,), y (B,) ints in [0, num_classes] or None -> (B, H, W, out).

    w: the guidance scale, () or (B,), for a network built with guidance_embed_dim > 0
    (required there, refused otherwise).
    """
    if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
      raise ValueError(f"x must have shape (batch, *image_shape) = (B, {self.image_shape}), "
                       f"got {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise ValueError(f"x must be a floating-point array, got dtype {x.dtype}")
    emb = self._embedding(t, y, x.shape[0], x.dtype, w)
    counter = iter(range(1 << 30))
    key = lambda: None if dropout_key is None else jax.random.fold_in(dropout_key, next(counter))

    h = self.conv_in(x)
    skips = [h]
    for level in self.down:
      for i, blk in enumerate(level.blocks):
        h = blk(h, emb, key())
        if len(level.attentions):
          h = level.attentions[i](h)
        skips.append(h)
      if level.resample is not None:
        h = level.resample(h)
        skips.append(h)
    h = self.mid_block2(self.mid_attention(self.mid_block1(h, emb, key())), emb, key())
    for level in self.up:
      for i, blk in enumerate(level.blocks):
        h = blk(jnp.concatenate([h, skips.pop()], axis=-1), emb, key())
        if len(level.attentions):
          h = level.attentions[i](h)
      if level.resample is not None:
        h = level.resample(_upsample(h))
    return self.conv_out(nnx.silu(self.norm_out(h)))
