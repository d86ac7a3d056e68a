"""KL-regularised conv autoencoder on scikit-learn's 8x8 digits: LDM's first stage.

Usage: --config=configs/autoencoder_digits.py[:latent_channels=1,kl_weight=1e-3,steps=1000]
Arguments: dataset (digits | digits16 | ...), latent_channels (c of the latent image),
channels (width of the first level; the second has twice as many), levels (1 + the
number of stride-2 stages: 2 gives 8x8 -> 4x4), kl_weight (of the KL term against the
summed squared error), steps, batch, lr, runlocal (a few steps, for tests).

Defaults: data in [-1, 1]; encoder 8x8x1 -> 4x4x1 latent (16 numbers, a small image the
U-Net can take), widths 16 / 32, squared error + 1e-3 KL (Rombach et al. 2022 use 1e-6
against a summed L1 + LPIPS term of 256x256x3 images; on 64 pixels 1e-3 keeps the latent
from drifting while costing little reconstruction), 1000 steps of batch 128, Adam 2e-3
warmup + cosine, no EMA
(config.ema_decay = 0: the latent scale factor is a parameter group refreshed from the
trained encoder, experiments/families/autoencoder.py). Evaluation: reconstructions of the
297 held-out digits (FD / precision / recall against them, MSE, PSNR) and the latent
scale. Latent diffusion on top: configs/ldm_digits.py, docs/latent.md.
"""

from configs.common import base_config, parse_arg, runlocal
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, dataset="digits", latent_channels=1, channels=16, levels=2, kl_weight=1e-3,
                steps=1000, batch=128, lr=2e-3, runlocal=False)
  c = base_config("autoencoder", a.dataset, pixel_range="symmetric")
  c.autoencoder = ml_collections.ConfigDict({
      "latent_channels": a.latent_channels,
      "channels": tuple(a.channels * 2 ** min(i, 1) for i in range(a.levels)),
      "kl_weight": a.kl_weight,
      "reconstruction": "l2",
      "scale_images": 256,          # the first 256 training images set the latent scale (0: all)
  })
  c.sample = ml_collections.ConfigDict({"sampler": "reconstruction"})
  c.train.update(num_steps=a.steps, batch_size=a.batch, checkpoint_every=1000, log_every=100)
  c.optim.update(lr=a.lr, schedule="warmup_cosine", warmup_steps=100, final_lr_fraction=0.05)
  c.ema_decay = 0.0
  c.eval.update(num_samples=297, plot_samples=64)
  if a.runlocal:
    runlocal(c, num_steps=30, checkpoint_every=15, log_every=5, batch_size=32, warmup_steps=0,
             num_samples=64, plot_samples=16, progress=False,
             autoencoder={"channels": (8, 16)})
  return c
