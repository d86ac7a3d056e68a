"""Convolutional VAE on CIFAR-10 (or MNIST, Fashion-MNIST, CelebA-64) with a dequantised
Gaussian likelihood.

Usage: --config=configs/vae_cifar10.py:dataset=cifar10
Arguments: dataset (cifar10 | mnist | fashion_mnist | celeb_a), latent (default 128, 32 for
the 28x28 sets), beta (beta-VAE weight, 1 = ELBO), k (IWAE samples in training), lr, steps,
batch, runlocal (a tiny net for two steps on 8 devices: what the tests run on mocked tfds
data).

Likelihood: a diagonal Gaussian p(x|z) = N(mu(z), diag sigma^2) with a learned per-pixel
(homoscedastic) log-variance, on pixels in [0, 1] dequantised uniformly within their
1/255-wide bins (Theis et al. 2016), so the held-out -L_1000 converts to an upper bound
on bits/dim (test_bits_per_dim; experiments/families/vae.py). A Gaussian rather than a
discretised logistic mixture (PixelCNN++) keeps the decoder the plain conv VAE; its bits/dim
is correspondingly weak (several bits/dim, against ~3 for strong likelihood models).

Networks (research/nets/conv_vae.py): stride-2 conv widths (64, 128, 256) for 32x32
(-> 4x4x256), (32, 64) for 28x28 (-> 7x7x64), (64, 128, 256, 512) for 64x64 (-> 4x4x512);
the decoder mirrors them with transposed convolutions. Adam 1e-3 (1000 warm-up steps,
cosine decay to 10%), gradient clipping at norm 1, batch 128, 100k steps, EMA 0.999.
Evaluation on 1000 held-out images in batches of 100 (importance sampling with k up to 1000).
"""

from configs import images
from configs.common import base_config, parse_arg
import ml_collections

DATASETS = ("cifar10", "mnist", "fashion_mnist", "celeb_a")
CHANNELS = {32: (64, 128, 256), 28: (32, 64), 64: (64, 128, 256, 512)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, dataset="cifar10", latent=0, beta=1.0, k=1, lr=1e-3, steps=100_000,
                batch=128, runlocal=False)
  if a.dataset not in DATASETS:
    raise ValueError(f"dataset must be one of {DATASETS}, got {a.dataset!r}")
  size = images.SHAPES[a.dataset][0]
  c = base_config("vae", a.dataset, pixel_range="unit")
  c.vae = ml_collections.ConfigDict({
      "network": "conv",
      "channels": CHANNELS[size],
      "latent_dim": a.latent or (32 if size == 28 else 128),
      "likelihood": "gaussian",
      "decoder_log_var": -2.0,            # initial per-pixel log-variance (learned)
      "learn_decoder_var": True,
      "dequantize_levels": 256,
      "beta": a.beta,
      "capacity": 0.0,
      "capacity_steps": 1,
      "gamma": 0.0,
      "kl": "analytic",
      "iwae_k": a.k,
      "eval_k": (1, 5, 50),
      "nll_k": 1000,
      "nll_chunk": 50,
      "eval_num": 1000,                   # held-out images evaluated (and baseline train images)
      "eval_batch": 100,
  })
  c.sample = ml_collections.ConfigDict({"sampler": "mean"})
  c.train.update(num_steps=a.steps, batch_size=a.batch, checkpoint_every=5000, log_every=100)
  c.optim.update(lr=a.lr, schedule="warmup_cosine", warmup_steps=1000, final_lr_fraction=0.1)
  c.ema_decay = 0.999
  c.eval.update(num_samples=10_000, plot_samples=64)
  if a.runlocal:
    images.shrink_for_runlocal(c)
    c.vae.update(channels=(8, 16), latent_dim=8, eval_k=(1, 5), nll_k=20, nll_chunk=10,
                 eval_num=16, eval_batch=8)
  return c
