"""diffusers schedulers driven by an exact analytic-mixture model (the benchmark's peer).

Each scheduler runs its own loop (set_timesteps / scale_model_input / step) on the
same x_T. The model returns the exact E[eps | x_t] of the mixture at the noise
level the scheduler itself uses for that call (its `sigmas[step_index]` where it
keeps Karras-style sigmas, else alphas_cumprod[t]), so every scheduler gets a
perfect network and only its discretisation error remains. Requires torch and
diffusers; `available()` says whether they import.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from research.diffusion import exact


def available() -> bool:
  try:
    import diffusers  # noqa: F401
    import torch  # noqa: F401
  except ImportError:
    return False
  return True


def version() -> str:
  import diffusers
  return diffusers.__version__


# label -> (scheduler class name, constructor options); each also runs with every
# timestep_spacing in SPACINGS and the best one is reported.
SCHEDULERS = {
    "DDIM": ("DDIMScheduler", {"set_alpha_to_one": True, "clip_sample": False}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"solver_order": 2, "algorithm_type": "dpmsolver++"}),
    "DPM++ 3M": ("DPMSolverMultistepScheduler", {"solver_order": 3, "algorithm_type": "dpmsolver++"}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"solver_order": 2, "algorithm_type": "dpmsolver++",
                                                        "use_karras_sigmas": True}),
    "DPM++ 3M Karras": ("DPMSolverMultistepScheduler", {"solver_order": 3, "algorithm_type": "dpmsolver++",
                                                        "use_karras_sigmas": True}),
    "UniPC": ("UniPCMultistepScheduler", {"solver_order": 2}),
    "UniPC 3": ("UniPCMultistepScheduler", {"solver_order": 3}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler Karras": ("EulerDiscreteScheduler", {"use_karras_sigmas": True}),
    "Heun": ("HeunDiscreteScheduler", {}),
}
SPACINGS = ("leading", "linspace", "trailing")


def steps_for_nfe(label: str, nfe: int) -> int:
  """Inference steps whose evaluation count fits the budget (Heun: 2N - 1 evaluations)."""
  return (nfe + 1) // 2 if SCHEDULERS[label][0] == "HeunDiscreteScheduler" else nfe


def make(label: str, spacing: str, betas: np.ndarray):
  import diffusers
  cls_name, options = SCHEDULERS[label]
  return getattr(diffusers, cls_name)(
      num_train_timesteps=len(betas), trained_betas=np.asarray(betas, np.float64),
      prediction_type="epsilon", timestep_spacing=spacing, **options)


def run(label: str, spacing: str, betas: np.ndarray, mix, x_T: np.ndarray, num_steps: int):
  """(x0, nfe) of one diffusers scheduler from x_T with the exact mixture model."""
  import torch
  scheduler = make(label, spacing, betas)
  scheduler.set_timesteps(num_steps)
  eps_fn = jax.jit(lambda x, a, s: exact.mixture_eps(mix, x, a, s))
  nfe = 0
  x = torch.from_numpy(np.asarray(x_T, np.float32)) * scheduler.init_noise_sigma
  for t in scheduler.timesteps:
    x_in = scheduler.scale_model_input(x, t)
    index = getattr(scheduler, "step_index", None) or 0
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None:
      s = float(sigmas[index])  # VE noise level the scheduler assumes: x_in is the VP input
      alpha, sigma = 1.0 / math.sqrt(1.0 + s * s), s / math.sqrt(1.0 + s * s)
    else:
      ab = float(scheduler.alphas_cumprod[int(t)])
      alpha, sigma = math.sqrt(ab), math.sqrt(1.0 - ab)
    eps = np.asarray(eps_fn(x_in.numpy(), np.float32(alpha), np.float32(sigma)))
    nfe += 1
    x = scheduler.step(torch.from_numpy(eps), t, x).prev_sample
  return x.numpy(), nfe
