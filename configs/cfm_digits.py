"""Conditional flow matching (Lipman et al. 2023; Tong et al. 2023) with a U-Net on
scikit-learn's 8x8 digits, optionally class-conditional with classifier-free guidance.

Usage: --config=configs/cfm_digits.py:cond=true,guidance=2.0,steps=3000
Arguments: dataset (digits | digits16 | digits_pad16 ...), path (icfm | lipman), cond,
guidance (CFG scale w; 1 = plain conditional), sampler (euler | midpoint | heun | rk4 |
dopri5), sample_steps, steps, batch, lr, channels, dequantize (L > 0: train on uniformly
dequantized draws (k + u) / L, which the held-out likelihood of docs/likelihood.md needs;
digits: 17), runlocal (a few steps, for tests).

Data in [-1, 1]; I-CFM with sigma = 0, the same U-Net as configs/ddpm_digits.py;
sampled with RK4 in 10 steps (40 NFE). Measured run times and scores: docs/images.md.
"""

from configs import images
from configs.common import parse_arg
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, dataset="digits", path="icfm", cond=False, guidance=1.0, sampler="rk4",
                sample_steps=10, steps=3000, batch=128, lr=1e-3, channels=32, dequantize=0,
                runlocal=False)
  c = images.digits_config("flow_matching", a)
  c.flow = ml_collections.ConfigDict({"path": a.path, "coupling": "independent", "sigma": 0.0,
                                      "sigma_min": 1e-4})
  c.sample = ml_collections.ConfigDict({"sampler": a.sampler, "num_steps": a.sample_steps,
                                        "guidance_scale": a.guidance, "options": ""})
  if a.dequantize:   # train on (k + u) / L: a density whose held-out bits/dim mean something
    c.data.dequantize = a.dequantize
  return images.digits_schedule(c, a)
