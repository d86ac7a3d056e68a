"""Convolutional VAE on scikit-learn's 8x8 digits (grey-scale), Bernoulli decoder.

Usage: --config=configs/vae_conv_digits.py:latent=16,steps=4000
Arguments: latent, beta (beta-VAE weight, 1 = ELBO), k (IWAE samples in training,
1 = ELBO), binary (digits_binary instead of grey-scale digits), channels (width of
the first of two stride-2 conv stages; the second has twice as many), steps, batch,
runlocal (a few steps, for tests). Everything else is configs/vae_digits.py's
(Adam 1e-3 with cosine decay, EMA 0.995, held-out -ELBO / IWAE NLL evaluation).

research/nets/conv_vae.py: encoder 8x8x1 -> 4x4xc -> 2x2x2c -> (mu, log_var), c = 16,
decoder the mirror image with transposed convolutions; pixels in [0, 1]
(the Bernoulli likelihood needs the unit pixel range). Samples are decoded prior
draws (Bernoulli means); evaluation adds Fréchet distance / precision / recall
against the 297 held-out digits; 4000 steps of batch 128 (wider nets hit a slow XLA CPU
path for transposed convolutions at 2x2). config.vae.hidden (from vae_digits) is unused.
"""

from configs import vae_digits
from configs.common import parse_arg
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, latent=16, beta=1.0, k=1, binary=False, channels=16, steps=4000, batch=128,
                runlocal=False)
  c = vae_digits.get_config(f"latent={a.latent},beta={a.beta},k={a.k},binary={a.binary},"
                            f"steps={a.steps},batch={a.batch},runlocal={a.runlocal}")
  c.data.pixel_range = "unit"
  c.vae.network = "conv"
  c.vae.channels = (a.channels, 2 * a.channels)   # encoder widths; the decoder mirrors them
  c.vae.eval_batch = 0                            # 297 digits: one evaluation batch
  c.eval.num_samples = 297                        # the size of the held-out split: FD reference
  c.eval.plot_samples = 64
  if a.runlocal:
    c.vae.channels = (8, 16)
    c.eval.num_samples = 64
    c.log.progress = False
  return c
