"""Drives a diffusers scheduler with the exact mixture model, for the preset/LCM comparison tests.

The "network" is the same function of the DDPM index on both sides: at index n
(diffusers' timestep, possibly fractional) it returns the exact E[eps | x] of the
mixture at our schedule's alpha(t), sigma(t), t = (n + 1)/T; our samplers call
exact.mixture_model_fn(mix, schedule) at t, i.e. the same function. The noise a
stochastic scheduler draws at its step i is replaced by ours,
contract.per_example_normal(key, i, x), so stochastic samplers compare step for step.
"""
from __future__ import annotations

import contextlib
import importlib

import jax
import jax.numpy as jnp
import numpy as np

from research.diffusion import contract, exact


def betas_of(schedule):
  """The float64 betas of a discrete schedule (from its alpha_bar table)."""
  ab = np.exp(2.0 * np.asarray(schedule.log_alpha_table, np.float64))
  return 1.0 - ab[1:] / ab[:-1]


@contextlib.contextmanager
def our_noise(module_name, key, counter):
  """Replace diffusers' randn_tensor in `module_name` by per_example_normal(key, step, x)."""
  module = importlib.import_module(module_name)
  original = module.randn_tensor
  import torch

  def fake(shape, generator=None, device=None, dtype=None, **_):
    z = np.asarray(contract.per_example_normal(key, counter[0], tuple(shape)))
    return torch.from_numpy(z).to(dtype=dtype or torch.float32)

  module.randn_tensor = fake
  try:
    yield
  finally:
    module.randn_tensor = original


_EPS = {}


def _eps_fn(mix, schedule):
  """The jitted exact eps at index time t, one per (mixture, schedule) (compiled once)."""
  key = (id(mix), id(schedule))
  if key not in _EPS:
    _EPS[key] = (mix, schedule, jax.jit(
        lambda x, t: exact.mixture_eps(mix, x, schedule.alpha(t), schedule.sigma(t))))
  return _EPS[key][2]


def run(scheduler, mix, schedule, x_T, num_steps, key=None, noise_module=None, step_kw=None,
        **set_kw):
  """x0 of diffusers' loop (set_timesteps / scale_model_input / model / step) from x_T (VP scale).

  Returns (x0, timesteps as float64 numpy, nfe).
  """
  import torch
  T = schedule.num_train_steps
  eps_fn = _eps_fn(mix, schedule)
  scheduler.set_timesteps(num_steps, **set_kw)
  x = torch.from_numpy(np.asarray(x_T, np.float32)) * float(scheduler.init_noise_sigma)
  counter = [0]
  ctx = our_noise(noise_module, key, counter) if noise_module else contextlib.nullcontext()
  nfe = 0
  with ctx:
    for n in scheduler.timesteps:
      x_in = scheduler.scale_model_input(x, n)
      t = jnp.float32((float(n) + 1.0) / T)
      eps = np.asarray(eps_fn(jnp.asarray(x_in.numpy()), t))
      nfe += 1
      x = scheduler.step(torch.from_numpy(eps), n, x, **(step_kw or {})).prev_sample
      counter[0] += 1
  return x.numpy(), np.asarray(scheduler.timesteps, np.float64), nfe
