"""Improved consistency training (iCT, Song & Dhariwal 2023) with a U-Net on scikit-learn's
8x8 digits, optionally class-conditional with classifier-free guidance.

Usage: --config=configs/consistency_digits.py:steps=4000,sample_steps=2
Arguments: dataset (digits | digits16 | digits_pad16 ...), cond, guidance (CFG scale on
the consistency function's output), sample_steps (1 = one-step generation), steps,
batch, lr, channels, runlocal (a few steps, for tests).

Data in [-1, 1] with sigma_data = 0.5 (the papers' image value); iCT's constants
(sigma_min 0.002, sigma_max 80, rho 7, s0 = 10, s1 = 1280, log-normal index,
pseudo-Huber, 1/(s_{n+1} - s_n) weights), no gradient clipping, dropout 0.1, the same
U-Net as configs/ddpm_digits.py. Measured run times and scores: docs/images.md.
"""

from configs import images
from configs.common import parse_arg
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, dataset="digits", cond=False, guidance=1.0, sample_steps=2, steps=4000,
                batch=128, lr=1e-3, channels=32, runlocal=False)
  # time_scale: c_noise = ln(sigma)/4 in [-1.55, 1.1]
  c = images.digits_config("consistency", a, time_scale=250.0)
  c.consistency = images.ict_consistency()
  c.sample = ml_collections.ConfigDict({"sampler": "consistency", "num_steps": a.sample_steps,
                                        "sigmas": (), "guidance_scale": a.guidance})
  c.optim.grad_clip = 0.0  # iCT: no clipping (its weights reach ~1e3)
  return images.digits_schedule(c, a)
