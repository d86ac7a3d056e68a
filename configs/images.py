"""Shared pieces of the image configs: U-Net model sections, data sections, runlocal shrinking.

Digits configs (configs/*_digits.py) train on scikit-learn's 8x8 digits (offline, real
images) in minutes on a CPU; the paper configs (configs/*_cifar10.py) are the full-scale
settings, with `dataset=` (cifar10 | mnist | fashion_mnist | celeb_a) and `runlocal=true`
(a tiny network for two steps: what the tests run on mocked data with 8 fake devices).
"""

from __future__ import annotations

import ml_collections

# Image shape of each data set after preprocessing (celeb_a: 140 crop -> 64x64).
SHAPES = {"cifar10": (32, 32, 3), "mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1),
          "celeb_a": (64, 64, 3), "digits": (8, 8, 1), "digits16": (16, 16, 1),
          "digits32": (32, 32, 1), "digits_pad16": (16, 16, 1)}


def unet(*, channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2, attention=(16,),
         num_heads=1, dropout=0.1, num_classes=0, label_dropout=0.1, time_scale=None):
  """A config.model section for research.nets.unet.UNet."""
  m = ml_collections.ConfigDict({
      "kind": "unet", "channels": channels, "channel_mult": tuple(channel_mult),
      "num_res_blocks": num_res_blocks, "attention_resolutions": tuple(attention),
      "num_heads": num_heads, "dropout": dropout, "num_groups": 8,
      "num_classes": num_classes, "label_dropout": label_dropout if num_classes else 0.0})
  if time_scale is not None:
    m.time_scale = time_scale
  return m


def paper_unet(dataset: str, **overrides):
  """DDPM's CIFAR-10 U-Net (35.7M params); the 28x28 sets drop a level, celeb_a adds one."""
  shape = SHAPES[dataset]
  mult = {32: (1, 2, 2, 2), 28: (1, 2, 2), 64: (1, 2, 2, 2, 4)}[shape[0]]
  attention = {32: (16,), 28: (14,), 64: (16,)}[shape[0]]
  return unet(channel_mult=mult, attention=attention, **overrides)


def digits_schedule(c: ml_collections.ConfigDict, a) -> ml_collections.ConfigDict:
  """The shared training / evaluation settings of the U-Net digits configs.

  a: the parsed config argument (steps, batch, lr, runlocal). Warmup + cosine to 5% of
  lr, EMA 0.999, evaluation on 297 samples (the held-out split: the FD reference).
  """
  c.train.num_steps = a.steps
  c.train.batch_size = a.batch
  c.train.checkpoint_every = 1000
  c.train.log_every = 100
  c.optim.schedule = "warmup_cosine"
  c.optim.warmup_steps = 100
  c.optim.lr = a.lr
  c.optim.final_lr_fraction = 0.05
  c.ema_decay = 0.999
  c.eval.num_samples = 297
  c.eval.plot_samples = 64
  if a.runlocal:
    shrink_for_runlocal(c, steps=4)
    c.train.batch_size = 32
  return c


def shrink_for_runlocal(c: ml_collections.ConfigDict, *, steps: int = 2) -> ml_collections.ConfigDict:
  """A tiny network and a couple of steps: the `runlocal=true` variant of a paper config."""
  c.train.num_steps = steps
  c.train.batch_size = 16
  c.train.checkpoint_every = steps
  c.train.log_every = 1
  c.optim.warmup_steps = 0
  if c.model.get("kind") == "unet":
    c.model.channels = 8
    c.model.channel_mult = (1, 2)
    c.model.num_res_blocks = 1
    c.model.attention_resolutions = ()
  c.eval.num_samples = 16
  c.eval.plot_samples = 16
  c.log.progress = False
  if "sample" in c and "num_steps" in c.sample:
    c.sample.num_steps = min(c.sample.num_steps, 2)
  return c
