"""A PyTorch twin of research.nets.unet.UNet (the U-Net benchmark's peer).

Same blocks, channel counts, padding, GroupNorm epsilon, attention and
parameter names (`down.0.blocks.1.conv1.weight` is `down/0/blocks/1/conv1/kernel`),
so `load_flax_params` copies a JAX parameter pytree into it and both networks
compute the same function (the benchmark reports the largest output gap).
Layout conversions: conv kernels HWIO -> OIHW, dense kernels (in, out) -> (out, in),
GroupNorm scale -> weight. Requires torch; import this module only after checking.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

_GN_EPS = 1e-5


def _conv3(cin, cout, stride=1):
  return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
  """[cos(t f_j), sin(t f_j)], f_j = max_period^(-j / (dim/2)), as research.nets.mlp."""
  half = dim // 2
  freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32,
                                                         device=t.device) / half)
  args = t.float()[:, None] * freqs
  return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
  def __init__(self, cin, cout, emb_dim, num_groups, dropout):
    super().__init__()
    self.norm1 = nn.GroupNorm(num_groups, cin, eps=_GN_EPS)
    self.conv1 = _conv3(cin, cout)
    self.emb_proj = nn.Linear(emb_dim, cout)
    self.norm2 = nn.GroupNorm(num_groups, cout, eps=_GN_EPS)
    self.conv2 = _conv3(cout, cout)
    nn.init.zeros_(self.conv2.weight)
    nn.init.zeros_(self.conv2.bias)
    self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None
    self.dropout = dropout

  def forward(self, h, emb):
    r = self.conv1(F.silu(self.norm1(h)))
    r = r + self.emb_proj(F.silu(emb))[:, :, None, None]
    r = F.dropout(F.silu(self.norm2(r)), self.dropout, self.training)
    r = self.conv2(r)
    return (h if self.skip is None else self.skip(h)) + r


class SelfAttention(nn.Module):
  def __init__(self, channels, num_heads, num_groups):
    super().__init__()
    self.num_heads = num_heads
    self.norm = nn.GroupNorm(num_groups, channels, eps=_GN_EPS)
    self.qkv = nn.Linear(channels, 3 * channels)
    self.proj = nn.Linear(channels, channels)
    nn.init.zeros_(self.proj.weight)
    nn.init.zeros_(self.proj.bias)

  def forward(self, h):
    b, c, hh, ww = h.shape
    tokens = self.norm(h).permute(0, 2, 3, 1).reshape(b, hh * ww, c)
    q, k, v = self.qkv(tokens).chunk(3, dim=-1)
    heads = lambda a: a.reshape(b, hh * ww, self.num_heads, c // self.num_heads).transpose(1, 2)
    out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
    out = self.proj(out.transpose(1, 2).reshape(b, hh * ww, c))
    return h + out.reshape(b, hh, ww, c).permute(0, 3, 1, 2)


class Level(nn.Module):
  def __init__(self, blocks, attentions, resample):
    super().__init__()
    self.blocks = nn.ModuleList(blocks)
    self.attentions = nn.ModuleList(attentions)
    self.resample = resample


class TorchUNet(nn.Module):
  """NCHW twin of research.nets.unet.UNet (same constructor keywords; image_shape is (H, W, C))."""

  def __init__(self, *, image_shape, out_channels=None, channels=64, channel_mult=(1, 2, 2),
               num_res_blocks=2, attention_resolutions=(16,), num_heads=1, dropout=0.0,
               num_classes=0, time_dim=None, time_scale=1.0, num_groups=8):
    super().__init__()
    height, _, in_channels = image_shape
    out_channels = out_channels or in_channels
    time_dim = time_dim or 4 * channels
    self.channels, self.time_scale, self.num_classes = channels, float(time_scale), num_classes
    levels = [l for l in range(len(channel_mult)) if height // 2 ** l in attention_resolutions]
    block = lambda a, b: ResBlock(a, b, time_dim, num_groups, dropout)
    attention = lambda c: SelfAttention(c, num_heads, num_groups)
    self.time_in = nn.Linear(channels, time_dim)
    self.time_out = nn.Linear(time_dim, time_dim)
    self.label_embed = nn.Embedding(num_classes + 1, time_dim) if num_classes else None
    self.conv_in = _conv3(in_channels, channels)
    ch, skips, down = channels, [channels], []
    for level, mult in enumerate(channel_mult):
      blocks, attns = [], []
      for _ in range(num_res_blocks):
        blocks.append(block(ch, channels * mult))
        ch = channels * mult
        if level in levels:
          attns.append(attention(ch))
        skips.append(ch)
      last = level == len(channel_mult) - 1
      down.append(Level(blocks, attns, None if last else _conv3(ch, ch, stride=2)))
      if not last:
        skips.append(ch)
    self.down = nn.ModuleList(down)
    self.mid_block1 = block(ch, ch)
    self.mid_attention = attention(ch)
    self.mid_block2 = block(ch, ch)
    up = []
    for level, mult in reversed(list(enumerate(channel_mult))):
      blocks, attns = [], []
      for _ in range(num_res_blocks + 1):
        blocks.append(block(ch + skips.pop(), channels * mult))
        ch = channels * mult
        if level in levels:
          attns.append(attention(ch))
      up.append(Level(blocks, attns, _conv3(ch, ch) if level else None))
    self.up = nn.ModuleList(up)
    self.norm_out = nn.GroupNorm(num_groups, ch, eps=_GN_EPS)
    self.conv_out = _conv3(ch, out_channels)
    nn.init.zeros_(self.conv_out.weight)
    nn.init.zeros_(self.conv_out.bias)

  def forward(self, x, t, y=None):
    """x (B, C, H, W), t (B,), y (B,) long or None -> (B, out_channels, H, W)."""
    emb = self.time_out(F.silu(self.time_in(
        sinusoidal_embedding(self.time_scale * t, self.channels).to(x.dtype))))
    if self.label_embed is not None:
      if y is None:
        y = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
      emb = emb + self.label_embed(y)
    h = self.conv_in(x)
    skips = [h]
    for level in self.down:
      for i, blk in enumerate(level.blocks):
        h = blk(h, emb)
        if len(level.attentions):
          h = level.attentions[i](h)
        skips.append(h)
      if level.resample is not None:
        h = level.resample(h)
        skips.append(h)
    h = self.mid_block2(self.mid_attention(self.mid_block1(h, emb)), emb)
    for level in self.up:
      for i, blk in enumerate(level.blocks):
        h = blk(torch.cat([h, skips.pop()], dim=1), emb)
        if len(level.attentions):
          h = level.attentions[i](h)
      if level.resample is not None:
        h = level.resample(F.interpolate(h, scale_factor=2, mode="nearest"))
    return self.conv_out(F.silu(self.norm_out(h)))


def _flatten(tree, prefix=()):
  if isinstance(tree, dict):
    for key, value in tree.items():
      yield from _flatten(value, prefix + (str(key),))
  else:
    yield prefix, tree


def load_flax_params(net: TorchUNet, params) -> None:
  """Copy a research.nets.unet.UNet parameter pytree into `net` (names and layouts must match).

  Raises ValueError when a name is missing on either side or a shape disagrees.
  """
  state = net.state_dict()
  new = {}
  for path, value in _flatten(params):
    value = np.asarray(value, dtype=np.float32)
    *module, leaf = path
    name = ".".join(module) + "." + {"kernel": "weight", "scale": "weight", "bias": "bias",
                                     "embedding": "weight"}[leaf]
    if leaf == "kernel":
      value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
    if name not in state or tuple(state[name].shape) != value.shape:
      raise ValueError(f"params: no torch parameter {name} of shape {value.shape}")
    new[name] = torch.tensor(np.ascontiguousarray(value))
  if set(new) != set(state):
    raise ValueError(f"params: torch parameters without a JAX value: "
                     f"{sorted(set(state) - set(new))}")
  net.load_state_dict(new)


def num_params(net: nn.Module) -> int:
  """The number of scalar parameters."""
  return sum(p.numel() for p in net.parameters())
