"""WGAN-GP (Gulrajani et al. 2017) with a small DCGAN on scikit-learn's 8x8 digits.

Usage: --config=configs/wgan_gp_digits.py:steps=8000,channels=64
Arguments: dataset (digits | digits16 | digits32 | digits_pad16), cond (class-conditional:
label embedding in G, projection critic), channels (DCGAN width), latent, n_critic,
gp_lambda, lr, b1, b2, steps (generator iterations), batch, runlocal (a few steps, for tests).

The paper's hyper-parameters: lambda = 10, n_critic = 5, Adam(lr 1e-4, b1 0.5, b2 0.9)
for both players (their MNIST / CIFAR DCGAN setting), no normalisation in the critic
(research/nets/dcgan.py, norm "none"); the generator uses per-example layer norm where
the paper has batch norm. Data in [-1, 1] (the generator ends in tanh). Evaluation
uses the generator's EMA (decay 0.999) and 297 samples, the size of the held-out
split that the Fréchet distance / precision / recall compare against. Defaults: 8000
generator iterations of batch 64, each with 5 critic updates.
"""

from configs import images
from configs.common import base_config, parse_arg
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, dataset="digits", cond=False, channels=64, latent=64, n_critic=5,
                gp_lambda=10.0, lr=1e-4, b1=0.5, b2=0.9, steps=8000, batch=64, runlocal=False)
  if a.dataset not in images.SHAPES or not a.dataset.startswith("digits"):
    raise ValueError(f"dataset must be one of the digits sets "
                     f"{tuple(k for k in images.SHAPES if k.startswith('digits'))}, "
                     f"got {a.dataset!r} (use configs/wgan_gp_cifar10.py for tfds sets)")
  c = base_config()
  c.family = "gan"
  c.data.name = a.dataset
  c.data.pixel_range = "symmetric"
  c.gan = ml_collections.ConfigDict({
      "loss": "wgan_gp", "n_critic": a.n_critic, "latent_dim": a.latent,
      "gp_lambda": a.gp_lambda, "clip": 0.01})
  c.model = ml_collections.ConfigDict({
      "kind": "dcgan", "channels": a.channels, "generator_norm": "layer",
      "critic_norm": "none", "num_classes": 10 if a.cond else 0})
  c.sample = ml_collections.ConfigDict({"sampler": "generator"})
  c.train.num_steps = a.steps
  c.train.batch_size = a.batch
  c.train.checkpoint_every = 1000
  c.train.log_every = 100
  for section in ("optim", "optim_critic"):
    c[section] = ml_collections.ConfigDict({
        "name": "adam", "lr": a.lr, "schedule": "constant", "warmup_steps": 0,
        "final_lr_fraction": 0.0, "grad_clip": 0.0, "b1": a.b1, "b2": a.b2,
        "weight_decay": 0.0})
  c.ema_decay = 0.999
  c.eval.num_samples = 297        # the size of the held-out split: FD reference
  c.eval.plot_samples = 64
  if a.runlocal:
    c.train.num_steps = 4
    c.train.batch_size = 16
    c.train.checkpoint_every = 2
    c.train.log_every = 2
    c.model.channels = 8
    c.gan.latent_dim = 8
    c.eval.num_samples = 64
    c.eval.plot_samples = 16
    c.log.progress = False
  return c
