"""Shared setup of the sampler tests: a smooth analytic mixture, its exact model and
the exact PF-ODE map (research.diffusion.exact.pf_ode_exact, float64 Dopri8 at
rtol = atol = 1e-10), and a jitted-sampler cache. Time convention: t = 1 noise,
t = 0 data.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from research.data import gmm
from research.diffusion import exact, samplers, schedules

SCHEDULE = schedules.discrete_vp(schedules.linear_betas())
# A smooth two-component mixture: the observed convergence orders show at
# 10-80 steps (sharp mixtures such as ring8 need many more steps for that).
MIX = gmm.GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [1.0, -0.5]], [0.5, 0.4])
MODEL = exact.mixture_model_fn(MIX, SCHEDULE)
X_T = jax.random.normal(jax.random.PRNGKey(0), (32, 2))


@functools.lru_cache(maxsize=None)
def reference():
  """Exact PF-ODE map of X_T to t_min and to t = 0 (float64, one solve)."""
  with jax.enable_x64(True):
    x64 = jnp.asarray(np.asarray(X_T), jnp.float64)
    ref = exact.pf_ode_exact(MODEL, x64, SCHEDULE, t_end=[SCHEDULE.t_min, 0.0])
    ref = np.asarray(ref)
  return {"t_min": ref[0], "zero": ref[1]}


def rmse(x, y):
  return float(np.sqrt(np.mean(np.sum((np.asarray(x, np.float64) - y)**2, -1))))


@functools.lru_cache(maxsize=None)
def _jitted(name, num_steps, model, options):
  return jax.jit(lambda k, x: samplers.get(name)(
      k, model, x, SCHEDULE, num_steps=num_steps, **dict(options)))


def run(name, num_steps, key=None, x=X_T, model=MODEL, **options):
  """The jitted sampler (compiled once per configuration) applied to (key, x)."""
  fn = _jitted(name, num_steps, model, tuple(sorted(options.items())))
  return fn(jax.random.PRNGKey(0) if key is None else key, x)
