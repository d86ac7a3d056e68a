"""Latent diffusion (Rombach et al. 2022) on scikit-learn's 8x8 digits: a U-Net on the 4x4x1
latents of a trained autoencoder, optionally class-conditional with classifier-free guidance.
With family=flow_matching or family=consistency the same config trains the latent
flow-matching (I-CFM) or latent consistency (iCT) twin on the same latents.

Usage: --config=configs/ldm_digits.py:ae=workdirs/autoencoder_digits,cond=true
Arguments: ae (a finished configs/autoencoder_digits.py workdir: config.data.autoencoder_workdir),
family (diffusion | flow_matching | consistency), cond (class-conditional with label
dropout 0.1), guidance (CFG scale w at sampling; 1 = plain conditional), sampler,
sample_steps (defaults per family: DPM-Solver++(2M) 25 steps, RK4 10 steps, 2 consistency
steps), steps, batch, lr, channels (U-Net width), runlocal (a few steps, for tests).

The data section is the pixel set's (digits in [-1, 1]) plus autoencoder_workdir: the
families train on z = s mu(x) (experiments/latent.py) and every sample is decoded to
pixels before it is written, plotted or scored (experiments/run.py sample), so the
evaluation's FD / precision / recall / class accuracy compare decoded digits with the 297
held-out digits, as for the pixel configs (docs/images.md, docs/latent.md).

Diffusion: Stable Diffusion's scaled_linear schedule (betas linear in sqrt from 0.00085 to
0.012, T = 1000), eps-prediction; no x0 clipping (latents are not in [-1, 1]: clip_x0
"static" / "dynamic" is refused). Flow matching: I-CFM, sigma 0. Consistency: iCT with
sigma_data = 1 (the scaled latents have unit std). U-Net: channels x (1, 2) on 4x4
(attention at 2x2), one res block, dropout 0.1; warmup + cosine, EMA 0.999.
"""

from configs import images
from configs.common import base_config, parse_arg
import ml_collections

FAMILIES = ("diffusion", "flow_matching", "consistency")
_SAMPLERS = {"diffusion": ("dpm_solver++", 25), "flow_matching": ("rk4", 10),
             "consistency": ("consistency", 2)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, ae="workdirs/autoencoder_digits", family="diffusion", cond=False,
                guidance=1.0, sampler="", sample_steps=0, steps=3000, batch=128, lr=1e-3,
                channels=32, runlocal=False)
  if a.family not in FAMILIES:
    raise ValueError(f"config argument family must be one of {FAMILIES}, got {a.family!r}")
  c = base_config(a.family, "digits", pixel_range="symmetric",
                         autoencoder_workdir=a.ae)
  c.model = images.unet(channels=a.channels, channel_mult=(1, 2), num_res_blocks=1,
                        attention=(2,), dropout=0.1, num_classes=10 if a.cond else 0,
                        **({"time_scale": 250.0} if a.family == "consistency" else {}))
  sampler, sample_steps = _SAMPLERS[a.family]
  sampler, sample_steps = a.sampler or sampler, a.sample_steps or sample_steps
  if a.family == "diffusion":
    c.diffusion = ml_collections.ConfigDict({
        "schedule": "scaled_linear", "num_train_steps": 1000, "prediction": "eps",
        "weighting": "none", "t_sampler": "uniform", "min_snr_gamma": 5.0})
    c.sample = ml_collections.ConfigDict({"sampler": sampler, "num_steps": sample_steps,
                                          "guidance_scale": a.guidance, "clip_x0": "none",
                                          "options": ""})
  elif a.family == "flow_matching":
    c.flow = ml_collections.ConfigDict({"path": "icfm", "coupling": "independent",
                                        "sigma": 0.0, "sigma_min": 1e-4})
    c.sample = ml_collections.ConfigDict({"sampler": sampler, "num_steps": sample_steps,
                                          "guidance_scale": a.guidance, "options": ""})
  else:
    c.consistency = images.ict_consistency()
    c.consistency.sigma_data = 1.0   # scaled latents: unit std
    c.sample = ml_collections.ConfigDict({"sampler": sampler, "num_steps": sample_steps,
                                          "sigmas": (), "guidance_scale": a.guidance})
    c.optim.grad_clip = 0.0          # iCT: no clipping
  return images.digits_schedule(c, a)
