"""Consistency models on a 2-D toy distribution: iCT, CT or CD from a diffusion teacher.

Usage:
  --config=configs/consistency_toy.py:dataset=moons,mode=ict        (20k steps, ~1.5-2 min on 2 CPU cores)
  --config=configs/consistency_toy.py:dataset=moons,mode=cd,teacher=/tmp/teacher_moons
Arguments: dataset (research.data.toy names), mode (ict | ct | cd), teacher (a trained
diffusion workdir, mode=cd only: configs/ddpm_toy.py on the same dataset), steps, batch,
lr, sigma_data, runlocal (a few steps of a tiny model, for tests).

Defaults follow the papers' constants (sigma_min = 0.002, sigma_max = 80, rho = 7;
iCT s0 = 10, s1 = 1280, P_mean = -1.1, P_std = 2; CT s0 = 2, s1 = 150, mu0 = 0.9;
CD N = 18 Heun steps, mu0 = 0.95) except sigma_data, which EDM sets to the data std:
the toy sets have a per-coordinate std of ~1-1.5, so sigma_data = 1.0 by default here
(0.5 is the papers' value for images in [-1, 1]). lr 2e-3 with warmup + cosine, no
gradient clipping (iCT's weights 1/(s_{n+1} - s_n) reach ~1e3 at small sigma; Adam is
invariant to that scale, a clip at 1 would not be). Original CT's EMA target (mu0 = 0.9,
mu(k) -> 0.9986) propagates consistency from low to high noise slowly: on moons its
one-step samples collapse towards the data mean in short runs, as iCT reports (the
target should be theta- = stop_gradient(theta)); use mode=ict for short runs
(docs/consistency.md has the measurements).
"""

from configs.common import base_config, parse_arg, runlocal
import ml_collections

_MODE_DEFAULTS = {
    # s0, s1, mu0, index_distribution, distance, weighting
    "ict": (10, 1280, 0.0, "lognormal", "pseudo_huber", "ict"),
    "ct": (2, 150, 0.9, "uniform", "l2", "uniform"),
    "cd": (2, 150, 0.95, "uniform", "l2", "uniform"),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, dataset="moons", mode="ict", teacher="", steps=20000, batch=256, lr=2e-3,
                sigma_data=1.0, runlocal=False)
  if a.mode not in _MODE_DEFAULTS:
    raise ValueError(f"config argument mode must be one of {tuple(_MODE_DEFAULTS)}, got {a.mode!r}")
  s0, s1, mu0, index_distribution, distance, weighting = _MODE_DEFAULTS[a.mode]
  c = base_config("consistency", a.dataset)
  c.model = ml_collections.ConfigDict({"hidden": (256, 256, 256), "time_dim": 32,
                                       "time_scale": 100.0})
  c.consistency = ml_collections.ConfigDict({
      "mode": a.mode,
      "sigma_data": a.sigma_data, "sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0,
      "s0": s0, "s1": s1,               # curriculum N(k) (ict, ct)
      "mu0": mu0,                       # target EMA (ct: mu(k) = exp(s0 ln mu0 / N(k)); cd: mu0)
      "num_points": 18,                 # cd: fixed N
      "index_distribution": index_distribution, "distance": distance, "weighting": weighting,
      "teacher_workdir": a.teacher, "teacher_solver": "heun",
  })
  c.sample = ml_collections.ConfigDict({"sampler": "consistency", "num_steps": 1,
                                        "sigmas": ()})   # e.g. (0.8,) for a 2-step tau_1
  c.train.update(num_steps=a.steps, batch_size=a.batch, checkpoint_every=2000, log_every=250)
  c.optim.update(lr=a.lr, grad_clip=0.0, schedule="warmup_cosine", warmup_steps=200,
                 final_lr_fraction=0.05)
  c.ema_decay = 0.999
  if a.runlocal:
    runlocal(c, num_steps=12, checkpoint_every=6, log_every=4, warmup_steps=2, num_samples=128,
             plot_samples=256, model={"hidden": (32, 32)})
  return c
