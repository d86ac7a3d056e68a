"""Diffusion (DDPM, Ho et al. 2020) with a U-Net on scikit-learn's 8x8 digits, optionally
class-conditional with classifier-free guidance (Ho & Salimans 2022).

Usage: --config=configs/ddpm_digits.py:cond=true,guidance=2.0,steps=3000
Arguments: dataset (digits | digits16 | digits_pad16 ...), cond (class-conditional with
label dropout 0.1), guidance (CFG scale w at sampling; 1 = plain conditional), sampler,
sample_steps, clip (x0 clipping at sampling: static | dynamic | none), steps, batch, lr,
channels, dequantize (L > 0: train on uniformly dequantized draws (k + u) / L, which the
held-out likelihood of docs/likelihood.md needs; digits: 17), schedule (any name of
experiments/families/diffusion.py SCHEDULES; the continuous cosine_vp suits the PF-ODE
likelihood: the discrete schedules' piecewise-linear log alpha has 1000 kinks, which cost
the adaptive solver ~9x the evaluations), runlocal (a few steps, for tests).

Data in [-1, 1]; cosine schedule (Nichol & Dhariwal 2021, T = 1000), eps-prediction,
U-Net 32 channels x (1, 2), attention at 4x4, dropout 0.1, EMA 0.999; sampled with
DPM-Solver++(2M) in 25 steps with the model's x0 clipped to [-1, 1] (DDPM's clip_denoised:
the discrete cosine schedule has alpha(T) = 4.9e-5, and without the clip the first steps
amplify the eps error by ~1 / alpha(T)). Measured run times and scores: docs/images.md.
"""

from configs import images
from configs.common import parse_arg
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, dataset="digits", cond=False, guidance=1.0, sampler="dpm_solver++",
                sample_steps=25, clip="static", steps=3000, batch=128, lr=1e-3, channels=32,
                dequantize=0, schedule="cosine", runlocal=False)
  c = images.digits_config("diffusion", a)
  c.diffusion = ml_collections.ConfigDict({
      "schedule": a.schedule, "num_train_steps": 1000, "prediction": "eps",
      "weighting": "none", "t_sampler": "uniform", "min_snr_gamma": 5.0})
  c.sample = ml_collections.ConfigDict({"sampler": a.sampler, "num_steps": a.sample_steps,
                                        "guidance_scale": a.guidance, "clip_x0": a.clip,
                                        "options": ""})
  if a.dequantize:   # train on (k + u) / L: a density whose held-out bits/dim mean something
    c.data.dequantize = a.dequantize
  return images.digits_schedule(c, a)
