"""The golden cases: fixed inputs whose outputs must not change under a refactor.

`sampler_outputs()` runs every diffusion sampler (with option variants that take
other code paths) and every flow ODE solver on an exact analytic model with fixed
keys; `family_losses()` trains each family's small config for 20 steps and keeps
its losses; `default_w2()` runs the README's default job. `python -m
tests.golden.make` writes tests/golden/golden.npz; tests/golden/test_golden.py
compares against it. Only the public API is used, so a refactor that keeps the
contracts keeps these functions unchanged.
"""

from __future__ import annotations

import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from research.data import gmm
from research.diffusion import exact, samplers, schedules

SCHEDULE = schedules.discrete_vp(schedules.linear_betas())
MIX = gmm.GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [1.5, -0.5]], [0.3, 0.6])
NUM_STEPS = 6
NUM_POINTS = 64

# (case name, sampler, options, prediction the analytic model outputs)
SAMPLER_CASES = (
    ("ddpm", "ddpm", {}, "eps"),
    ("ddpm_x0", "ddpm", {}, "x0"),
    ("ddim", "ddim", {}, "eps"),
    ("ddim_eta1", "ddim", {"eta": 1.0}, "eps"),
    ("ddim_v_karras", "ddim", {"spacing": "karras"}, "v"),
    ("ddim_no_final", "ddim", {"final_step_to_zero": False}, "eps"),
    ("ddim_timesteps", "ddim", {"timesteps": np.array([1.0, 0.7, 0.45, 0.25, 0.1, 0.03])}, "eps"),
    ("dpm_solver", "dpm_solver", {}, "eps"),
    ("dpm_solver_o2", "dpm_solver", {"order": 2}, "eps"),
    ("dpm_solver_single3", "dpm_solver", {"method": "singlestep", "order": 3}, "eps"),
    ("dpm_solver++", "dpm_solver++", {}, "eps"),
    ("dpm_solver++_o3", "dpm_solver++", {"order": 3}, "x0"),
    ("dpm_solver++_sde", "dpm_solver++", {"sde": True}, "eps"),
    ("dpm_solver++_logsnr", "dpm_solver++", {"spacing": "logsnr_uniform"}, "score"),
    ("unipc", "unipc", {}, "eps"),
    ("unipc_o2", "unipc", {"order": 2}, "eps"),
    ("euler", "euler", {}, "eps"),
    ("heun", "heun", {}, "eps"),
    ("heun_no_final", "heun", {"final_step_to_zero": False}, "eps"),
    ("euler_ancestral", "euler_ancestral", {}, "eps"),
    ("langevin", "langevin", {}, "eps"),
    ("pc", "pc", {}, "eps"),
    ("pc_2", "pc", {"corrector_steps": 2}, "eps"),
    ("consistency", "consistency", {}, "x0"),
)

FLOW_CASES = (
    ("flow_euler", "euler", {"num_steps": NUM_STEPS}),
    ("flow_midpoint", "midpoint", {"num_steps": NUM_STEPS}),
    ("flow_heun", "heun", {"num_steps": NUM_STEPS}),
    ("flow_rk4", "rk4", {"num_steps": NUM_STEPS}),
    ("flow_dopri5", "dopri5", {}),
)


def _flow_velocity(x, t):
  """A nonlinear velocity field with no learned parameters."""
  return jnp.sin(x[..., ::-1] + t) - 0.5 * x * t


def sampler_outputs() -> dict[str, np.ndarray]:
  """Every case's output on x_T ~ N(0, I) (key 0), sampler key 1, jitted."""
  x_T = jax.random.normal(jax.random.key(0), (NUM_POINTS, 2), jnp.float32)
  key = jax.random.key(1)
  out = {}
  for case, name, options, prediction in SAMPLER_CASES:
    model = exact.mixture_model_fn(MIX, SCHEDULE, prediction)
    sampler = samplers.get(name)
    fn = jax.jit(lambda k, x, sampler=sampler, model=model, options=options, prediction=prediction:
                 sampler(k, model, x, SCHEDULE, num_steps=NUM_STEPS, prediction=prediction,
                         **options))
    out["sampler/" + case] = np.asarray(fn(key, x_T))
  from research.flow import ode
  for case, name, options in FLOW_CASES:
    x1, nfe = jax.jit(lambda x, name=name, options=options:
                      ode.get_solver(name)(_flow_velocity, x, **options))(x_T)
    out["flow/" + case] = np.asarray(x1)
    out["flow_nfe/" + case] = np.asarray(nfe)
  return out


# (case name, config module, config argument, overrides)
FAMILY_CASES = (
    ("ddpm_toy", "ddpm_toy", "", {}),
    ("cfm_toy", "cfm_toy", "", {}),
    ("cfm_toy_ot", "cfm_toy", "coupling=ot", {}),
    ("vae_toy", "vae_toy", "", {}),
    ("vae_digits_capacity", "vae_digits", "capacity=5.0,capacity_steps=10", {}),
    ("gan_toy", "gan_toy", "", {}),
    ("wgan_gp_toy", "wgan_gp_toy", "", {}),
    ("consistency_ict", "consistency_toy", "mode=ict", {}),
    ("consistency_ct", "consistency_toy", "mode=ct", {}),
)
FAMILY_STEPS = 20


def family_config(module: str, arg: str, overrides: dict):
  import importlib
  config = importlib.import_module(f"configs.{module}").get_config(arg or None)
  with config.unlocked():
    config.train.batch_size = 64
    config.train.num_steps = 1000
    config.optim.warmup_steps = min(config.optim.get("warmup_steps", 0), 10)
    for path, value in overrides.items():
      node = config
      *parents, leaf = path.split(".")
      for p in parents:
        node = node[p]
      node[leaf] = value
  return config


def family_losses() -> dict[str, np.ndarray]:
  """The first FAMILY_STEPS losses (and per-phase losses) of every family case."""
  from experiments import trainer
  out = {}
  for case, module, arg, overrides in FAMILY_CASES:
    run = trainer.build(family_config(module, arg, overrides))
    state = trainer.init_state(run)
    step_fn = trainer.make_train_step(run)
    rows = []
    for _ in range(FAMILY_STEPS):
      state, metrics = step_fn(state, run.keys["train"])
      rows.append({k: np.asarray(v) for k, v in jax.device_get(metrics).items()
                   if k == "loss" or k.endswith("/loss")})
    for k in rows[0]:
      out[f"family/{case}/{k}"] = np.stack([r[k] for r in rows])
  return out


def default_w2() -> dict[str, np.ndarray]:
  """The README default job's W2 (and its noise floor), run as the user runs it (one device)."""
  import json
  import os
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  with tempfile.TemporaryDirectory() as workdir:
    subprocess.run([sys.executable, "-m", "launch.train", "--config=configs/default.py",
                    f"--workdir={workdir}", "--config.log.progress=false"],
                   cwd=root, check=True, capture_output=True)
    with open(os.path.join(workdir, "eval.json")) as f:
      summary = json.load(f)
  return {"default/w2": np.asarray(summary["w2"]),
          "default/w2_noise_floor": np.asarray(summary["w2_noise_floor"])}
