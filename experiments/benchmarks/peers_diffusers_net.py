"""diffusers schedulers driving a trained network (the trained-sampler benchmark's peer).

Each scheduler runs its own loop (set_timesteps / scale_model_input / step) from the
given x_T. The network is any callable `eps_fn(x, timestep, alpha, sigma) -> eps` on
NCHW float32 torch tensors: `timestep` (B,) is what the scheduler passes to its
UNet (the DDPM index n of alphas_cumprod[n], a float where the scheduler
interpolates, e.g. Karras sigmas), and (alpha, sigma) the VP noise level the
scheduler itself assumes for that call (from its `sigmas[step_index]` where it keeps
sigmas: alpha = 1/sqrt(1 + s^2), sigma = s/sqrt(1 + s^2); else from
alphas_cumprod[timestep]), which x0 clipping needs. Classifier-free guidance and
clipping are wrappers of eps_fn built here (`guided`, `clipped`) with the same
formulas as research/diffusion/guidance.py. Requires torch and diffusers; import
only after `available()`.
"""

from __future__ import annotations

import math

import numpy as np

from experiments.benchmarks.peers_diffusers import available, version  # noqa: F401  (one check)


# label -> (scheduler class name, constructor options). "Euler a" is stochastic.
SCHEDULERS = {
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"solver_order": 2, "algorithm_type": "dpmsolver++"}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"solver_order": 2, "algorithm_type": "dpmsolver++",
                                                        "use_karras_sigmas": True}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "DDIM": ("DDIMScheduler", {"set_alpha_to_one": True, "clip_sample": False}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {"clip_sample": False}),
}
STOCHASTIC = ("Euler a",)
SPACINGS = ("leading", "linspace", "trailing")


def steps_for_nfe(label: str, nfe: int) -> int:
  """Inference steps whose network-call count fits the budget (Heun: 2N - 1 calls)."""
  return (nfe + 1) // 2 if SCHEDULERS[label][0] == "HeunDiscreteScheduler" else nfe


def make(label: str, betas: np.ndarray, spacing: str = "default"):
  """The diffusers scheduler `label` for the discrete schedule `betas`, eps-prediction;
  spacing "default" keeps the scheduler's own timestep_spacing (DDIM: leading, the
  others: linspace)."""
  import diffusers
  cls_name, options = SCHEDULERS[label]
  if spacing != "default":
    options = {**options, "timestep_spacing": spacing}
  return getattr(diffusers, cls_name)(
      num_train_timesteps=len(betas), trained_betas=np.asarray(betas, np.float64),
      prediction_type="epsilon", **options)


def guided(net_fn, labels, guidance_scale: float, null_label: int):
  """eps_fn from a conditional net_fn(x, timestep, y): eps_u + w (eps_c - eps_u) (one batch of 2B).

  w = 1 calls only the conditional network, w = 0 only the unconditional one (as
  research.diffusion.guidance.classifier_free_guidance does for a concrete w).
  labels None: an unconditional network, net_fn(x, timestep, None).
  """
  import torch
  w = float(guidance_scale)

  def eps_fn(x, timestep, alpha, sigma):
    del alpha, sigma
    if labels is None:
      return net_fn(x, timestep, None)
    null = torch.full_like(labels, null_label)
    if w == 1.0:
      return net_fn(x, timestep, labels)
    if w == 0.0:
      return net_fn(x, timestep, null)
    both = net_fn(torch.cat([x, x]), torch.cat([timestep, timestep]), torch.cat([labels, null]))
    cond, uncond = both.chunk(2)
    return uncond + w * (cond - uncond)

  return eps_fn


def clipped(eps_fn, mode: str):
  """eps_fn whose implied x0 = (x - sigma eps)/alpha is clipped ("static": to [-1, 1];
  "dynamic": Imagen's p = 0.995 threshold), returned as eps = (x - alpha x0)/sigma."""
  import torch
  if mode == "none":
    return eps_fn

  def fn(x, timestep, alpha, sigma):
    eps = eps_fn(x, timestep, alpha, sigma)
    x0 = (x - sigma * eps) / alpha
    if mode == "static":
      x0 = x0.clamp(-1.0, 1.0)
    else:
      s = torch.quantile(x0.abs().reshape(x0.shape[0], -1), 0.995, dim=1).clamp(min=1.0)
      s = s.reshape(-1, *([1] * (x0.ndim - 1)))
      x0 = torch.maximum(torch.minimum(x0, s), -s) / s
    return (x - alpha * x0) / sigma

  return fn


def _noise_level(scheduler, timestep) -> tuple[float, float]:
  """(alpha, sigma) of the VP input the scheduler passes for this call."""
  sigmas = getattr(scheduler, "sigmas", None)
  if sigmas is not None:
    index = getattr(scheduler, "step_index", None) or 0
    s = float(sigmas[index])
    return 1.0 / math.sqrt(1.0 + s * s), s / math.sqrt(1.0 + s * s)
  ab = float(scheduler.alphas_cumprod[int(timestep)])
  return math.sqrt(ab), math.sqrt(1.0 - ab)


def run(label: str, eps_fn, x_T, num_steps: int, *, betas: np.ndarray, spacing: str = "default",
        seed: int = 0):
  """(x0, nfe) of scheduler `label` from x_T (NCHW torch, N(0, I)) with eps_fn (module docstring).

  seed: the torch generator of the stochastic schedulers' noise.
  """
  import torch
  scheduler = make(label, betas, spacing)
  scheduler.set_timesteps(num_steps)
  if hasattr(scheduler, "set_begin_index"):
    # Start at step index 0. Otherwise a schedule whose first timesteps repeat (Karras sigmas
    # on the discrete cosine schedule round to 999, 999, 999, ...) makes diffusers take the
    # second match as the first index (its image-to-image rule) and run off the sigmas.
    scheduler.set_begin_index(0)
  generator = torch.Generator().manual_seed(seed)
  kwargs = {"generator": generator} if label in STOCHASTIC else {}
  x = x_T * scheduler.init_noise_sigma
  nfe = 0
  with torch.inference_mode():
    for t in scheduler.timesteps:
      x_in = scheduler.scale_model_input(x, t)
      alpha, sigma = _noise_level(scheduler, t)
      timestep = torch.full((x.shape[0],), float(t), dtype=torch.float32)
      eps = eps_fn(x_in, timestep, alpha, sigma)
      nfe += 1
      x = scheduler.step(eps, t, x, **kwargs).prev_sample
  return x, nfe
