"""Benchmark: every sampler's error vs the exact PF-ODE map of an analytic mixture, per NFE,
side by side with diffusers, plus the model-calibrated step grid and a check that the
stochastic samplers reach the data
(python -m launch.benchmark --config=configs/bench_samplers.py[:quick=true,samples=N])."""

import ml_collections

from configs.common import parse_arg

# (label, registry name, options)
OURS = (
    ("ddim", "ddim", {}),
    ("dpm_solver-1", "dpm_solver", {"order": 1}),
    ("dpm_solver-2 multistep", "dpm_solver", {"order": 2}),
    ("dpm_solver-3 multistep", "dpm_solver", {"order": 3}),
    ("dpm_solver-2 singlestep", "dpm_solver", {"order": 2, "method": "singlestep"}),
    ("dpm_solver-3 singlestep", "dpm_solver", {"order": 3, "method": "singlestep"}),
    ("dpm_solver++ 2M", "dpm_solver++", {"order": 2}),
    ("dpm_solver++ 3M", "dpm_solver++", {"order": 3}),
    ("unipc-2", "unipc", {"order": 2}),
    ("unipc-3", "unipc", {"order": 3}),
    ("euler", "euler", {}),
    ("heun", "heun", {}),
    ("ddpm", "ddpm", {}),
    ("ddim eta=1", "ddim", {"eta": 1.0}),
    ("dpm_solver++ 2M SDE", "dpm_solver++", {"order": 2, "sde": True}),
    ("euler_ancestral", "euler_ancestral", {}),
    ("heun churn", "heun", {"s_churn": 10.0}),
    ("langevin", "langevin", {}),
    ("pc", "pc", {}),
)


# Stochastic samplers that must reach the data distribution: (label, name, options, num_steps).
STOCHASTIC = (
    ("ddpm", "ddpm", {}, 1000),
    ("ddim eta=1", "ddim", {"eta": 1.0}, 1000),
    ("ddim eta=1", "ddim", {"eta": 1.0}, 250),
    ("ddim eta=1", "ddim", {"eta": 1.0}, 100),
)


def get_config(arg=None):
  a = parse_arg(arg, quick=False, samples=10000, w2_samples=1000)
  return ml_collections.ConfigDict({
      "benchmark": "samplers",
      "name": "samplers",
      # (dim, mean scale of the random 8-D mixture; ignored for the 2-D ring8)
      "problems": ((2, 1.0),) if a.quick else ((2, 1.0), (8, 1.0), (8, 3.0)),
      "spacings": ("logsnr_uniform", "time_uniform", "time_quadratic"),
      "nfe_budgets": (10,) if a.quick else (5, 10, 20, 50),
      # RMSE over num_samples x_T; W2 (exact assignment, O(n^3)) over the first w2_samples.
      "num_samples": 200 if a.quick else a.samples,
      "w2_samples": 200 if a.quick else a.w2_samples,
      "ours": OURS[:4] if a.quick else OURS,
      # Labels of `ours` that also run on the model-calibrated grid (research.diffusion.steps).
      "calibrate": ("dpm_solver-3 multistep",) if a.quick else ("unipc-3",),
      "calibration": {
          "seed": 1234,               # calibration noise key (evaluation noise: key 0)
          "num_samples": 512 if a.quick else 65536,
          "num_focus": 64 if a.quick else 2048,
          "batch_size": 128 if a.quick else 1024,
          "num_iters": 30 if a.quick else 300,
          "reference_steps": 100 if a.quick else 500,
      },
      "stochastic": STOCHASTIC[:1] + STOCHASTIC[3:] if a.quick else STOCHASTIC,
      "with_diffusers": True,
  })
