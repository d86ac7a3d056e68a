"""Inception-V3 pool3 feature extractor of FID (Flax NNX), weights loaded from a local file.

The network of "Rethinking the Inception Architecture" (Szegedy et al. 2016)
as used for the Fréchet Inception Distance (Heusel et al. 2017): TensorFlow's
2015-12-05 Inception graph, in the form pytorch-fid (Seitzer) ported it, i.e.
torchvision's Inception3 with the FID patches:

  * average pools inside the Inception blocks do not count padded zeros
    (count_include_pad=False), as TensorFlow's do not;
  * the last block (Mixed_7c) max-pools instead of average-pooling in its
    pool branch (a quirk of the original graph).

features(x) = mean_{h,w} Mixed_7c(... Conv2d_1a_3x3(2 * resize_299(x) - 1)) in R^2048,
for x of shape (B, H, W, C) with pixels in [0, 1] and C in {1, 3} (grey images
are repeated to 3 channels). Resizing is bilinear with half-pixel centres and no
anti-aliasing (= torch's F.interpolate(mode="bilinear", align_corners=False)).
Without resizing any input of at least 75x75 works (the network is fully
convolutional up to the global average pool).

Parameter layout (what `InceptionV3FID` holds and what a weights file must
hold, as dotted keys of research.nets.mlp.functional-style pure dicts):

  <block>.conv.kernel   (kh, kw, in, out)   e.g. Mixed_5b.branch5x5_2.conv.kernel (5, 5, 48, 64)
  <block>.bn.scale      (out,)              batch-norm gamma
  <block>.bn.bias       (out,)              batch-norm beta
  <block>.bn.mean       (out,)              running mean
  <block>.bn.var        (out,)              running variance (eps = 1e-3)

with <block> the torchvision names (Conv2d_1a_3x3, ..., Mixed_7c.branch_pool).
`params_from_torch_state_dict` converts pytorch-fid's state dict
(pt_inception-2015-12-05-6726825d.pth: "<block>.conv.weight" (out, in, kh, kw),
"<block>.bn.weight|bias|running_mean|running_var"; "fc.*" and
"*.num_batches_tracked" are dropped) into this layout.
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["InceptionV3FID", "functional_inception", "abstract_inception", "preprocess",
           "params_from_torch_state_dict", "FEATURE_DIM", "INPUT_SIZE", "MIN_INPUT_SIZE"]

FEATURE_DIM = 2048
INPUT_SIZE = 299
MIN_INPUT_SIZE = 75
BN_EPSILON = 1e-3

_he_normal = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")


def _pair(v):
  return (v, v) if isinstance(v, int) else tuple(v)


class BasicConv2d(nnx.Module):
  """relu(batchnorm(conv(x))), the conv without bias; torch-style symmetric padding."""

  def __init__(self, in_features: int, out_features: int, kernel_size, *, stride=1, padding=0,
               rngs: nnx.Rngs):
    ph, pw = _pair(padding)
    self.conv = nnx.Conv(in_features, out_features, _pair(kernel_size), strides=_pair(stride),
                         padding=((ph, ph), (pw, pw)), use_bias=False, kernel_init=_he_normal,
                         rngs=rngs)
    self.bn = nnx.BatchNorm(out_features, use_running_average=True, epsilon=BN_EPSILON, rngs=rngs)

  def __call__(self, x):
    return nnx.relu(self.bn(self.conv(x)))


def _avg_pool_3x3(x):
  """3x3 stride-1 average pool, padding 1, padded zeros not counted (TensorFlow's pool)."""
  return nnx.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x):
  """3x3 stride-1 max pool, padding 1 (padding never wins)."""
  return nnx.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


def _max_pool_3x3_s2(x):
  return nnx.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nnx.Module):
  """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 -> 224 + pool_features channels."""

  def __init__(self, in_features: int, pool_features: int, *, rngs: nnx.Rngs):
    c = in_features
    self.branch1x1 = BasicConv2d(c, 64, 1, rngs=rngs)
    self.branch5x5_1 = BasicConv2d(c, 48, 1, rngs=rngs)
    self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2, rngs=rngs)
    self.branch3x3dbl_1 = BasicConv2d(c, 64, 1, rngs=rngs)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, rngs=rngs)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1, rngs=rngs)
    self.branch_pool = BasicConv2d(c, pool_features, 1, rngs=rngs)

  def __call__(self, x):
    b5 = self.branch5x5_2(self.branch5x5_1(x))
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    return jnp.concatenate(
        [self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool_3x3(x))], axis=-1)


class InceptionB(nnx.Module):
  """35 -> 17 reduction: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2 -> 480 + in channels."""

  def __init__(self, in_features: int, *, rngs: nnx.Rngs):
    c = in_features
    self.branch3x3 = BasicConv2d(c, 384, 3, stride=2, rngs=rngs)
    self.branch3x3dbl_1 = BasicConv2d(c, 64, 1, rngs=rngs)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, rngs=rngs)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2, rngs=rngs)

  def __call__(self, x):
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    return jnp.concatenate([self.branch3x3(x), b3, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nnx.Module):
  """17x17 block with factorised 7x7 convolutions -> 768 channels."""

  def __init__(self, in_features: int, channels_7x7: int, *, rngs: nnx.Rngs):
    c, c7 = in_features, channels_7x7
    self.branch1x1 = BasicConv2d(c, 192, 1, rngs=rngs)
    self.branch7x7_1 = BasicConv2d(c, c7, 1, rngs=rngs)
    self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7dbl_1 = BasicConv2d(c, c7, 1, rngs=rngs)
    self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch_pool = BasicConv2d(c, 192, 1, rngs=rngs)

  def __call__(self, x):
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    bd = x
    for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                  self.branch7x7dbl_4, self.branch7x7dbl_5):
      bd = layer(bd)
    return jnp.concatenate(
        [self.branch1x1(x), b7, bd, self.branch_pool(_avg_pool_3x3(x))], axis=-1)


class InceptionD(nnx.Module):
  """17 -> 8 reduction: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2 -> 512 + in channels."""

  def __init__(self, in_features: int, *, rngs: nnx.Rngs):
    c = in_features
    self.branch3x3_1 = BasicConv2d(c, 192, 1, rngs=rngs)
    self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2, rngs=rngs)
    self.branch7x7x3_1 = BasicConv2d(c, 192, 1, rngs=rngs)
    self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2, rngs=rngs)

  def __call__(self, x):
    b3 = self.branch3x3_2(self.branch3x3_1(x))
    b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nnx.Module):
  """8x8 block with split 1x3/3x1 branches -> 2048 channels; pool branch 'avg' or 'max'."""

  def __init__(self, in_features: int, *, pool: str, rngs: nnx.Rngs):
    if pool not in ("avg", "max"):
      raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
    c = in_features
    self.pool = pool
    self.branch1x1 = BasicConv2d(c, 320, 1, rngs=rngs)
    self.branch3x3_1 = BasicConv2d(c, 384, 1, rngs=rngs)
    self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
    self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
    self.branch3x3dbl_1 = BasicConv2d(c, 448, 1, rngs=rngs)
    self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1, rngs=rngs)
    self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
    self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
    self.branch_pool = BasicConv2d(c, 192, 1, rngs=rngs)

  def __call__(self, x):
    b3 = self.branch3x3_1(x)
    b3 = jnp.concatenate([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], axis=-1)
    bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    bd = jnp.concatenate([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], axis=-1)
    pooled = _avg_pool_3x3(x) if self.pool == "avg" else _max_pool_3x3(x)
    return jnp.concatenate([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], axis=-1)


def preprocess(images: jax.Array, *, resize: bool = True) -> jax.Array:
  """(B, H, W, C) in [0, 1], C in {1, 3} -> (B, 299, 299, 3) in [-1, 1] (pytorch-fid's input).

  Bilinear resize with half-pixel centres and no anti-aliasing, like
  F.interpolate(mode="bilinear", align_corners=False); with resize=False the
  spatial size is kept (it must be >= 75).
  """
  images = jnp.asarray(images, jnp.float32)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"images must have shape (batch, H, W, 1 or 3), got shape {images.shape}")
  if images.shape[-1] == 1:
    images = jnp.repeat(images, 3, axis=-1)
  if resize:
    if images.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
      images = jax.image.resize(images, (images.shape[0], INPUT_SIZE, INPUT_SIZE, 3),
                                method="linear", antialias=False)
  elif min(images.shape[1:3]) < MIN_INPUT_SIZE:
    raise ValueError(f"images must be at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} when resize=False,"
                     f" got shape {images.shape}")
  return 2.0 * images - 1.0


class InceptionV3FID(nnx.Module):
  """Inception-V3 up to the global average pool (pool3, 2048-d), FID variant.

  __call__(x, resize=True): x (B, H, W, C) in [0, 1], C in {1, 3} -> (B, 2048).
  """

  def __init__(self, *, rngs: nnx.Rngs):
    self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2, rngs=rngs)
    self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3, rngs=rngs)
    self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1, rngs=rngs)
    self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1, rngs=rngs)
    self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3, rngs=rngs)
    self.Mixed_5b = InceptionA(192, 32, rngs=rngs)
    self.Mixed_5c = InceptionA(256, 64, rngs=rngs)
    self.Mixed_5d = InceptionA(288, 64, rngs=rngs)
    self.Mixed_6a = InceptionB(288, rngs=rngs)
    self.Mixed_6b = InceptionC(768, 128, rngs=rngs)
    self.Mixed_6c = InceptionC(768, 160, rngs=rngs)
    self.Mixed_6d = InceptionC(768, 160, rngs=rngs)
    self.Mixed_6e = InceptionC(768, 192, rngs=rngs)
    self.Mixed_7a = InceptionD(768, rngs=rngs)
    self.Mixed_7b = InceptionE(1280, pool="avg", rngs=rngs)
    self.Mixed_7c = InceptionE(2048, pool="max", rngs=rngs)

  def __call__(self, x: jax.Array, resize: bool = True) -> jax.Array:
    h = preprocess(x, resize=resize)
    h = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(h)))
    h = _max_pool_3x3_s2(h)
    h = _max_pool_3x3_s2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(h)))
    for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                  self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b,
                  self.Mixed_7c):
      h = block(h)
    return jnp.mean(h, axis=(1, 2))


def functional_inception(module: InceptionV3FID):
  """(params, features_fn) with features_fn(params, x, resize=True) -> (B, 2048) pure.

  params is the nested dict of nnx.to_pure_dict (layout in the module docstring);
  for an abstract module (nnx.eval_shape) its leaves are jax.ShapeDtypeStruct.
  """
  if not isinstance(module, InceptionV3FID):
    raise ValueError(f"module must be an InceptionV3FID, got {type(module).__name__}")
  graphdef, state = nnx.split(module)
  params = nnx.to_pure_dict(state)

  def features_fn(p, x, resize: bool = True):
    return nnx.merge(graphdef, nnx.State(p))(x, resize=resize)

  return params, features_fn


def abstract_inception():
  """(params_shapes, features_fn) without allocating or initialising any weight.

  params_shapes mirrors the parameter pytree with jax.ShapeDtypeStruct leaves
  (21.8M float32 numbers in 94 conv + batch-norm layers); pair features_fn with
  weights loaded from a file. Random eager initialisation of the full network
  is slow on CPU (tens of seconds); this takes a few seconds of tracing.
  """
  return functional_inception(nnx.eval_shape(lambda: InceptionV3FID(rngs=nnx.Rngs(0))))


_TORCH_BN_NAMES = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def params_from_torch_state_dict(state_dict: Mapping[str, object]) -> dict:
  """pytorch-fid / torchvision Inception3 state dict -> this module's nested params.

  "<block>.conv.weight" (out, in, kh, kw) -> "<block>.conv.kernel" (kh, kw, in, out);
  "<block>.bn.{weight, bias, running_mean, running_var}" -> "<block>.bn.{scale, bias,
  mean, var}"; "fc.*", "AuxLogits.*" and "*.num_batches_tracked" are dropped.
  Values may be numpy arrays or anything np.asarray accepts (CPU torch tensors).
  Raises ValueError on any other key.
  """
  nested: dict = {}
  for name, value in state_dict.items():
    if name.startswith(("fc.", "AuxLogits.")) or name.endswith(".num_batches_tracked"):
      continue
    parts = name.split(".")
    array = np.asarray(value, dtype=np.float32)
    if len(parts) >= 3 and parts[-2] == "conv" and parts[-1] == "weight":
      if array.ndim != 4:
        raise ValueError(f"state_dict[{name!r}] must be a 4-d conv weight, got shape {array.shape}")
      parts, array = parts[:-1] + ["kernel"], array.transpose(2, 3, 1, 0)
    elif len(parts) >= 3 and parts[-2] == "bn" and parts[-1] in _TORCH_BN_NAMES:
      parts = parts[:-1] + [_TORCH_BN_NAMES[parts[-1]]]
    else:
      raise ValueError(f"state_dict has an unexpected key {name!r} for an Inception-V3 feature"
                       " extractor (expected <block>.conv.weight or <block>.bn.*)")
    node = nested
    for part in parts[:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = array
  return nested
