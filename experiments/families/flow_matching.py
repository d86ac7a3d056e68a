"""Conditional flow matching (Lipman et al. 2023; Tong et al. 2023) as a trainer plug-in.

Time convention: t = 0 is noise, t = 1 is data. The network v_theta(x, t) is an
MLP for points or a U-Net for images (config.model.kind, see
experiments/families/networks.py); samples are the ODE dx/dt = v_theta(x, t)
integrated from x(0) ~ N(0, I) to t = 1 with a fixed-step solver or adaptive dopri5.

Class-conditional models (config.model.num_classes = K > 0) train with label
dropout to the null label K and sample the guided velocity
v = v(x, t, null) + w (v(x, t, y) - v(x, t, null)) (classifier-free guidance,
Ho & Salimans 2022, as used for flow matching by Zheng et al. 2023 "Guided flows").
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from experiments.data import make_dataset
from experiments.families import networks
from research.diffusion import guidance as guidance_lib
from research.flow import ode, paths
from research.losses.flow import cfm_loss


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
    if config.model.get("num_classes", 0) and flow.coupling != "independent":
      raise ValueError(f"config.flow.coupling={flow.coupling!r} re-pairs noise and data, which a "
                       f"class-conditional model (config.model.num_classes > 0) cannot follow: "
                       f"use 'independent'")
    if not config.sample.get("guidance_scale", 1.0) >= 0:
      raise ValueError(f"config.sample.guidance_scale must be >= 0, "
                       f"got {config.sample.guidance_scale!r}")

  def __init__(self, config):
    self.config = config
    self.data_shape = tuple(make_dataset(config.data).shape)
    self.dim = math.prod(self.data_shape)
    networks.check_model_config(config.model, self.data_shape, family="flow_matching")
    self.net = networks.make_network(config.model, self.data_shape, time_scale=1000.0)
    self.num_classes = self.net.num_classes
    self.conditional = self.num_classes > 0

  def init(self, key: jax.Array):
    return self.net.init(key)

  def velocity_fn(self, params, y=None, dropout_key=None):
    def v(x, t):
      t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
      return self.net.apply(params, x, t, y, dropout_key=dropout_key)
    return v

  def loss(self, params, batch, key):
    flow, m = self.config.flow, self.config.model
    path_params = {"icfm": {"sigma": flow.sigma}, "lipman": {"sigma_min": flow.sigma_min}}
    batch, y, dropout_key = networks.training_inputs(m, batch, key, self.num_classes)
    return cfm_loss(self.velocity_fn(params, y, dropout_key), key, batch, path=flow.path,
                    coupling=flow.coupling, **path_params.get(flow.path, {}))

  def guided_velocity_fn(self, params, labels, guidance_scale: float):
    """v(x, t, null) + w (v(x, t, y) - v(x, t, null)) for labels (n,)."""
    guided = guidance_lib.classifier_free_guidance(
        lambda x, t, y: self.velocity_fn(params, y)(x, t), labels,
        guidance_scale=guidance_scale, null_label=self.num_classes)
    return lambda x, t: guided(x, jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1]))

  def sample(self, params, key, n: int, *, sampler: str | None = None,
             num_steps: int | None = None, labels=None, guidance_scale: float | None = None):
    """Integrate the learned ODE from N(0, I) noise; returns (x1, {"nfe": ...}).

    Conditional models: `labels` (n,) (default 0, 1, ..., K-1, 0, ...) and the
    guidance scale w (default config.sample.guidance_scale).
    """
    sampler = sampler or self.config.sample.sampler
    num_steps = num_steps or self.config.sample.num_steps
    x0 = jax.random.normal(key, (n, *self.data_shape), jnp.float32)
    if self.conditional:
      labels = networks.default_labels(n, self.num_classes) if labels is None else labels
      w = float(self.config.sample.get("guidance_scale", 1.0) if guidance_scale is None
                else guidance_scale)
      if w < 0:
        raise ValueError(f"guidance_scale must be >= 0, got {w}")
      v = self.guided_velocity_fn(params, jnp.asarray(labels, jnp.int32), w)
    elif labels is not None or guidance_scale is not None:
      raise ValueError("labels / guidance_scale need a class-conditional model "
                       "(config.model.num_classes > 0)")
    else:
      v = self.velocity_fn(params)
    if sampler == "dopri5":
      x1, nfe = ode.solve_adaptive(v, x0)
      return x1, {"nfe": nfe}
    x1 = ode.solve(v, x0, num_steps=num_steps, method=sampler)
    return x1, {"nfe": ode.nfe(sampler, num_steps)}
