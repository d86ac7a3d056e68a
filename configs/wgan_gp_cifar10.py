"""WGAN-GP (Gulrajani et al. 2017) with a DCGAN on CIFAR-10 (or MNIST, Fashion-MNIST, CelebA-64).

Usage: --config=configs/wgan_gp_cifar10.py:dataset=cifar10
Arguments: dataset (cifar10 | mnist | fashion_mnist | celeb_a), cond (class-conditional:
label embedding in G, projection critic; not for celeb_a, which has no labels), channels
(DCGAN width; default 128 for cifar10, 64 otherwise), latent, n_critic, gp_lambda, lr,
b1, b2, steps (generator iterations), batch, runlocal (a tiny net for two steps on 8
devices: what the tests run on mocked tfds data).

The paper's CIFAR-10 setting: batch 64, 100k generator iterations, n_critic = 5 critic
updates per generator update, lambda = 10, Adam(lr 2e-4, b1 0, b2 0.9) for both players
with the learning rate decayed linearly to 0 over training (their gan_cifar_resnet.py
schedule; their DCGAN script uses a constant 1e-4 with b1 0.5). Networks: DCGAN with
DIM = 128 (research/nets/dcgan.py: 4x4x4c -> 8x8x2c -> 16x16xc -> 32x32x3 and the
mirror-image critic without normalisation, as the GP requires per-example outputs); the
generator uses per-example layer norm where the paper has batch norm. The 28x28 sets get
a 7x7 seed and two stages, celeb_a (64x64) four. Data in [-1, 1]. Evaluation uses the
generator's EMA (decay 0.999).
"""

from configs import images
from configs.common import parse_arg
import ml_collections

DATASETS = ("cifar10", "mnist", "fashion_mnist", "celeb_a")
NUM_CLASSES = {"cifar10": 10, "mnist": 10, "fashion_mnist": 10, "celeb_a": 0}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, dataset="cifar10", cond=False, channels=0, latent=128, n_critic=5,
                gp_lambda=10.0, lr=2e-4, b1=0.0, b2=0.9, steps=100_000, batch=64,
                runlocal=False)
  if a.dataset not in DATASETS:
    raise ValueError(f"dataset must be one of {DATASETS}, got {a.dataset!r}")
  if a.cond and not NUM_CLASSES[a.dataset]:
    raise ValueError(f"cond=true needs class labels; dataset {a.dataset!r} has none")
  c = images.wgan_gp_dcgan(a, channels=a.channels or (128 if a.dataset == "cifar10" else 64),
                           num_classes=NUM_CLASSES[a.dataset] if a.cond else 0,
                           lr_schedule="linear")
  c.train.update(checkpoint_every=5000, log_every=100, plot_every=10_000)
  c.eval.update(num_samples=10_000, plot_samples=64)
  if a.runlocal:
    images.shrink_for_runlocal(c, steps=2)
    c.model.channels = 8
    c.gan.latent_dim = 8
    c.train.plot_every = 0
  return c
