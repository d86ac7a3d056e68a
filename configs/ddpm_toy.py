"""Diffusion (DDPM, Ho et al. 2020) on a 2-D toy distribution.

Usage: --config=configs/ddpm_toy.py:dataset=moons,schedule=linear,prediction=eps,sampler=ddpm
Arguments: dataset (research.data.toy names), schedule (linear | cosine | scaled_linear, the
discrete T = 1000 schedules, or the continuous vp | cosine_vp | ve), prediction
(eps | v | x0 | score), weighting (none | snr | snr_plus_one | truncated_snr | min_snr | p2),
sampler (any research.diffusion.samplers name), sample_steps, steps, batch, lr,
runlocal (a few steps of a tiny model, for tests).

Default: DDPM's linear betas 1e-4..0.02 with T = 1000, eps-prediction and L_simple,
8000 steps of batch 256, evaluated with the original
ancestral sampler over all 1000 steps. Fast alternatives at launch.sample time:
`--sampler=dpm_solver++ --num_steps=10` (or 25), `--sampler=ddim --num_steps=50`.
"""

from configs.common import base_config, parse_arg, product, sweep_arg, toy_schedule
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, dataset="moons", schedule="linear", prediction="eps", weighting="none",
                sampler="ddpm", sample_steps=1000, steps=8000, batch=256, lr=2e-3,
                runlocal=False)
  c = base_config("diffusion", a.dataset)
  c.model = ml_collections.ConfigDict({"hidden": (256, 256, 256), "time_dim": 32})
  c.diffusion = ml_collections.ConfigDict({
      "schedule": a.schedule, "num_train_steps": 1000, "prediction": a.prediction,
      "weighting": a.weighting, "t_sampler": "uniform", "min_snr_gamma": 5.0})
  # options: options of config.sample.sampler only, "k=v,k2=v2" (e.g. "eta=1.0" for ddim).
  c.sample = ml_collections.ConfigDict({"sampler": a.sampler, "num_steps": a.sample_steps,
                                        "options": ""})
  return toy_schedule(c, a, lr=a.lr)


def get_sweep(arg: str | None = None) -> list[dict]:
  """Ablation: prediction target (eps | v | x0) x noise schedule (linear | cosine), 3 seeds each.

  Seeds train as one vmapped program (config.num_seeds). runlocal=true: eps vs v, 1 seed.
  """
  a = sweep_arg(arg, runlocal=False)
  if a.runlocal:
    return product(("diffusion.prediction", ["eps", "v"]))
  return product(("diffusion.prediction", ["eps", "v", "x0"]),
                 ("diffusion.schedule", ["linear", "cosine"]), ("num_seeds", [3]))
