"""Shared pieces of the image configs: U-Net model sections, data sections, runlocal shrinking.

Digits configs (configs/*_digits.py) train on scikit-learn's 8x8 digits (offline, real
images) in minutes on a CPU; the paper configs (configs/*_cifar10.py) are the full-scale
settings, with `dataset=` (cifar10 | mnist | fashion_mnist | celeb_a) and `runlocal=true`
(a tiny network for two steps: what the tests run on mocked data with 8 fake devices).
"""

from __future__ import annotations

import ml_collections

from configs.common import base_config, gan_optimizers, runlocal

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


def paper_config(family: str, dataset: str) -> ml_collections.ConfigDict:
  """The shared fields of the paper-scale U-Net configs ({cfm,consistency,ddpm}_cifar10.py).

  tfds data in [-1, 1] (config.data.data_dir may point at prepared tfds data); checkpoints
  every 10k steps, every 100k kept; evaluation on 10k samples, 64 plotted.
  """
  c = base_config(family, dataset, pixel_range="symmetric", data_dir="")
  c.train.update(checkpoint_every=10_000, log_every=500, keep_every=100_000)
  c.eval.update(num_samples=10_000, plot_samples=64)
  return c


def ict_consistency() -> ml_collections.ConfigDict:
  """iCT's config.consistency section for images in [-1, 1] (Song & Dhariwal 2023).

  sigma_data 0.5, sigma 0.002..80, rho 7, curriculum s0 = 10 -> s1 = 1280, log-normal
  index, pseudo-Huber distance, weights 1/(s_{n+1} - s_n), no EMA target.
  """
  return ml_collections.ConfigDict({
      "mode": "ict", "sigma_data": 0.5, "sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0,
      "s0": 10, "s1": 1280, "mu0": 0.0, "num_points": 18,
      "index_distribution": "lognormal", "distance": "pseudo_huber", "weighting": "ict",
      "teacher_workdir": "", "teacher_solver": "heun"})


def digits_config(family: str, a, **unet_overrides) -> ml_collections.ConfigDict:
  """The base of the U-Net digits configs: data a.dataset in [-1, 1] and their U-Net.

  a: the parsed config argument (dataset, channels, cond). U-Net a.channels x (1, 2), one
  res block, attention at half the image size, dropout 0.1, 10 classes with a.cond.
  """
  c = base_config(family, a.dataset, pixel_range="symmetric")
  c.model = unet(channels=a.channels, channel_mult=(1, 2), num_res_blocks=1,
                 attention=(SHAPES[a.dataset][0] // 2,), dropout=0.1,
                 num_classes=10 if a.cond else 0, **unet_overrides)
  return c


def wgan_gp_dcgan(a, *, channels: int, num_classes: int,
                  lr_schedule: str) -> ml_collections.ConfigDict:
  """The shared fields of the WGAN-GP DCGAN configs (configs/wgan_gp_{cifar10,digits}.py).

  a: the parsed config argument (dataset, n_critic, latent, gp_lambda, lr, b1, b2, steps,
  batch). Data in [-1, 1]; a per-example layer-norm generator and a critic without
  normalisation; the same Adam for both players; generator EMA 0.999.
  """
  c = base_config("gan", a.dataset, pixel_range="symmetric")
  c.gan = ml_collections.ConfigDict({
      "loss": "wgan_gp", "n_critic": a.n_critic, "latent_dim": a.latent,
      "gp_lambda": a.gp_lambda, "clip": 0.01})
  c.model = ml_collections.ConfigDict({
      "kind": "dcgan", "channels": channels, "generator_norm": "layer", "critic_norm": "none",
      "num_classes": num_classes})
  c.sample = ml_collections.ConfigDict({"sampler": "generator"})
  c.train.update(num_steps=a.steps, batch_size=a.batch)
  gan_optimizers(c, lr=a.lr, critic_lr=a.lr, b1=a.b1, b2=a.b2, schedule=lr_schedule)
  c.ema_decay = 0.999
  return c


def digits_schedule(c: ml_collections.ConfigDict, a) -> ml_collections.ConfigDict:
  """The shared training / evaluation settings of the U-Net digits configs.

  a: the parsed config argument (steps, batch, lr, runlocal). Warmup + cosine to 5% of
  lr, EMA 0.999, evaluation on 297 samples (the held-out split: the FD reference).
  """
  c.train.update(num_steps=a.steps, batch_size=a.batch, checkpoint_every=1000, log_every=100)
  c.optim.update(schedule="warmup_cosine", warmup_steps=100, lr=a.lr, final_lr_fraction=0.05)
  c.ema_decay = 0.999
  c.eval.update(num_samples=297, plot_samples=64)
  if a.runlocal:
    shrink_for_runlocal(c, steps=4)
    c.train.batch_size = 32
  return c


def shrink_for_runlocal(c: ml_collections.ConfigDict, *, steps: int = 2) -> ml_collections.ConfigDict:
  """A tiny network and a couple of steps: the `runlocal=true` variant of a paper config."""
  runlocal(c, num_steps=steps, batch_size=16, checkpoint_every=steps, log_every=1,
           warmup_steps=0, num_samples=16, plot_samples=16, progress=False)
  if "model" in c and c.model.get("kind") == "unet":
    c.model.update(channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=())
  if "sample" in c and "num_steps" in c.sample:
    c.sample.num_steps = min(c.sample.num_steps, 2)
  return c
