"""The network behind a denoiser / velocity family, chosen by config.model.kind.

    net = make_network(config.model, data_shape, time_scale=...)
    params = net.init(key)
    out = net.apply(params, x, t, y=None, dropout_key=None)   # out.shape == x.shape

kind "mlp" (default): research.nets.mlp.VelocityMLP on the flattened example
(unconditional only). kind "unet": research.nets.unet.UNet (Ho et al. 2020;
Nichol & Dhariwal 2021) on (H, W, C) images, optionally class-conditional:
config.model.num_classes = K > 0 adds a label embedding with K + 1 entries,
index K being the null label of classifier-free guidance (Ho & Salimans 2022).
Dropout (config.model.dropout) is active only when a dropout_key is given.
config.model.guidance_embed_dim = d > 0 (U-Net only; default 0, off) adds the guidance-scale
embedding of latent consistency models (research.nets.unet.guidance_scale_embedding):
apply(..., w=...) then takes the guidance scale w, () or (batch,).

Conditional families share `drop_labels` (label dropout during training) and
`null_label`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from experiments import validation as check
from research.nets.mlp import VelocityMLP, functional

KINDS = ("mlp", "unet")


@dataclasses.dataclass(frozen=True)
class Network:
  init: Callable      # key -> params
  apply: Callable     # (params, x, t, y=None, dropout_key=None, w=None) -> array of x's shape
  num_classes: int    # 0: unconditional


def check_model_config(model, data_shape, *, family: str) -> None:
  """Raise ValueError naming the field for a bad config.model (before anything compiles)."""
  kind = check.choice(model.get("kind", "mlp"), KINDS, "config.model.kind")
  num_classes = check.non_negative_int(model.get("num_classes", 0), "config.model.num_classes")
  check.number_in(model.get("label_dropout", 0.0), "config.model.label_dropout", 0.0, 1.0)
  check.number_in(model.get("dropout", 0.0), "config.model.dropout", 0.0, 1.0)
  guidance_dim = check.non_negative_int(model.get("guidance_embed_dim", 0),
                                        "config.model.guidance_embed_dim")
  if 0 < guidance_dim < 4:
    raise ValueError(f"config.model.guidance_embed_dim must be 0 (off) or >= 4, "
                     f"got {guidance_dim}")
  if kind == "mlp":
    check.positive_ints(model.hidden, "config.model.hidden")
    if num_classes:
      raise ValueError(f"config.model.num_classes={num_classes} needs config.model.kind='unet' "
                       f"({family}: the MLP is unconditional)")
    if guidance_dim:
      raise ValueError(f"config.model.guidance_embed_dim={guidance_dim} needs "
                       f"config.model.kind='unet' ({family}: the MLP has no guidance input)")
  elif len(data_shape) != 3:
    raise ValueError(f"config.model.kind='unet' needs (H, W, C) images, but config.data gives "
                     f"examples of shape {tuple(data_shape)}")


def _unet(model, data_shape, time_scale, key):
  from research.nets.unet import UNet
  return UNet(image_shape=tuple(data_shape), channels=model.channels,
              channel_mult=tuple(model.channel_mult), num_res_blocks=model.num_res_blocks,
              attention_resolutions=tuple(model.attention_resolutions),
              num_heads=model.get("num_heads", 1), dropout=model.get("dropout", 0.0),
              num_classes=model.get("num_classes", 0), time_scale=time_scale,
              num_groups=model.get("num_groups", 8),
              guidance_embed_dim=model.get("guidance_embed_dim", 0), rngs=nnx.Rngs(params=key))


def make_network(model, data_shape, *, time_scale: float) -> Network:
  """The config.model network for examples of shape data_shape (see the module docstring)."""
  data_shape = tuple(data_shape)
  kind = model.get("kind", "mlp")
  if kind == "mlp":
    dim = math.prod(data_shape)

    def build(key):
      return VelocityMLP(dim, tuple(model.hidden), time_dim=model.time_dim,
                         time_scale=time_scale, rngs=nnx.Rngs(params=key))

    _, raw = functional(build(jax.random.key(0)))

    def apply(params, x, t, y=None, dropout_key=None, w=None):
      del dropout_key
      if y is not None:
        raise ValueError("the MLP network is unconditional: y must be None")
      if w is not None:
        raise ValueError("the MLP network has no guidance input: w must be None")
      return raw(params, x.reshape(x.shape[0], -1), t).reshape(x.shape)

    return Network(lambda key: functional(build(key))[0], apply, 0)

  _, raw = functional(_unet(model, data_shape, time_scale, jax.random.key(0)))

  def apply(params, x, t, y=None, dropout_key=None, w=None):
    if w is None:
      return raw(params, x, t, y, dropout_key=dropout_key)
    return raw(params, x, t, y, dropout_key=dropout_key, w=w)

  return Network(lambda key: functional(_unet(model, data_shape, time_scale, key))[0], apply,
                 int(model.get("num_classes", 0)))


def drop_labels(key: jax.Array, y: jax.Array, num_classes: int, rate: float) -> jax.Array:
  """Replace each label by the null label num_classes with probability `rate` (CFG training)."""
  if rate <= 0.0:
    return y
  return jnp.where(jax.random.bernoulli(key, rate, y.shape), num_classes, y)


def training_inputs(model, batch, key: jax.Array, num_classes: int):
  """(x, y, dropout_key) for one training loss call of a denoiser / velocity family.

  Conditional models (num_classes > 0) get (x, labels) batches; each label becomes
  the null label with probability model.label_dropout (key fold 1). The dropout key
  (fold 2) is None unless model.dropout > 0. Unconditional: y is None.
  """
  y = dropout_key = None
  if num_classes:
    batch, y = batch
    y = drop_labels(jax.random.fold_in(key, 1), y, num_classes, model.get("label_dropout", 0.0))
  if model.get("dropout", 0.0) > 0:
    dropout_key = jax.random.fold_in(key, 2)
  return batch, y, dropout_key


def default_labels(n: int, num_classes: int) -> jax.Array:
  """Labels 0, 1, ..., K-1, 0, 1, ... for n class-conditional samples."""
  return jnp.arange(n, dtype=jnp.int32) % num_classes
