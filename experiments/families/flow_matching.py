"""Conditional flow matching (Lipman et al. 2023; Tong et al. 2023) as a trainer plug-in.

Time convention: t = 0 is noise, t = 1 is data. The network is a VelocityMLP
v_theta(x, t); samples are the ODE dx/dt = v_theta(x, t) integrated from
x(0) ~ N(0, I) to t = 1 with a fixed-step solver or adaptive dopri5.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from experiments.data import make_dataset
from research.flow import ode, paths
from research.losses.flow import cfm_loss
from research.nets.mlp import VelocityMLP, functional


class FlowMatching:
  """CFM family: init / loss / sample over a plain parameter pytree."""

  @staticmethod
  def check_config(config) -> None:
    flow = config.flow
    if flow.path not in paths.PATHS:
      raise ValueError(f"config.flow.path must be one of {tuple(paths.PATHS)}, got {flow.path!r}")
    if flow.coupling not in paths.COUPLINGS:
      raise ValueError(f"config.flow.coupling must be one of {tuple(paths.COUPLINGS)}, "
                       f"got {flow.coupling!r}")
    if flow.sigma < 0:
      raise ValueError(f"config.flow.sigma must be >= 0, got {flow.sigma}")
    if not 0 <= flow.sigma_min < 1:
      raise ValueError(f"config.flow.sigma_min must be in [0, 1), got {flow.sigma_min}")
    if config.sample.sampler not in ode.SOLVERS:
      raise ValueError(f"config.sample.sampler must be one of {tuple(ode.SOLVERS)}, "
                       f"got {config.sample.sampler!r}")
    if config.sample.num_steps < 1:
      raise ValueError(f"config.sample.num_steps must be >= 1, got {config.sample.num_steps}")
    if any(h < 1 for h in config.model.hidden):
      raise ValueError(f"config.model.hidden must be positive widths, got {config.model.hidden}")

  def __init__(self, config):
    self.config = config
    self.data_shape = tuple(make_dataset(config.data).shape)
    self.dim = math.prod(self.data_shape)
    _, self._apply = functional(self._module(jax.random.key(0)))

  def _module(self, key):
    m = self.config.model
    return VelocityMLP(self.dim, tuple(m.hidden), time_dim=m.time_dim,
                       rngs=nnx.Rngs(params=key))

  def init(self, key: jax.Array):
    return functional(self._module(key))[0]

  def velocity_fn(self, params):
    return lambda x, t: self._apply(params, x, t)

  def loss(self, params, batch, key):
    flow = self.config.flow
    path_params = {"icfm": {"sigma": flow.sigma}, "lipman": {"sigma_min": flow.sigma_min}}
    return cfm_loss(self.velocity_fn(params), key, batch, path=flow.path, coupling=flow.coupling,
                    **path_params.get(flow.path, {}))

  def sample(self, params, key, n: int, *, sampler: str | None = None,
             num_steps: int | None = None):
    """Integrate the learned ODE from N(0, I) noise; returns (x1, {"nfe": ...})."""
    sampler = sampler or self.config.sample.sampler
    num_steps = num_steps or self.config.sample.num_steps
    x0 = jax.random.normal(key, (n, *self.data_shape), jnp.float32)
    v = self.velocity_fn(params)
    if sampler == "dopri5":
      x1, nfe = ode.solve_adaptive(v, x0)
      return x1, {"nfe": nfe}
    x1 = ode.solve(v, x0, num_steps=num_steps, method=sampler)
    return x1, {"nfe": ode.nfe(sampler, num_steps)}
