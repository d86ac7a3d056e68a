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
from configs.common import parse_arg, runlocal
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, dataset="digits", cond=False, channels=64, latent=64, n_critic=5,
                gp_lambda=10.0, lr=1e-4, b1=0.5, b2=0.9, steps=8000, batch=64, runlocal=False)
  if a.dataset not in images.SHAPES or not a.dataset.startswith("digits"):
    raise ValueError(f"dataset must be one of the digits sets "
                     f"{tuple(k for k in images.SHAPES if k.startswith('digits'))}, "
                     f"got {a.dataset!r} (use configs/wgan_gp_cifar10.py for tfds sets)")
  c = images.wgan_gp_dcgan(a, channels=a.channels, num_classes=10 if a.cond else 0,
                           lr_schedule="constant")
  c.train.update(checkpoint_every=1000, log_every=100)
  c.eval.update(num_samples=297, plot_samples=64)  # the held-out split: the FD reference
  if a.runlocal:
    runlocal(c, num_steps=4, batch_size=16, checkpoint_every=2, log_every=2, num_samples=64,
             plot_samples=16, progress=False, model={"channels": 8}, gan={"latent_dim": 8})
  return c
