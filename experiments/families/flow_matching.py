"""Conditional flow matching (Lipman et al. 2023; Tong et al. 2023) as a trainer plug-in.

Time convention: t = 0 is noise, t = 1 is data. The network v_theta(x, t) is an
MLP for points or a U-Net for images (config.model.kind, see
experiments/families/networks.py); samples are the ODE dx/dt = v_theta(x, t)
integrated from x(0) ~ N(0, I) to t = 1 with any solver registered in
research/flow/ode.py (`ode.spec(name)`: fixed-step euler / midpoint / heun / rk4,
adaptive dopri5, which takes no num_steps), called through its registry entry.

Likelihood: `heldout_bits_per_dim` integrates the learned ODE backwards from dequantized
held-out images (t = 1) to N(0, I) noise (t = 0) with the divergence, exact or
Hutchinson's estimate (research/flow/likelihood.py), and reports bits/dim under the
dequantization convention of docs/likelihood.md; the model must have been trained on
dequantized digits (config.data.dequantize = L; `supports_dequantize`). The default
evaluation does not run it.

Class-conditional models (config.model.num_classes = K > 0) train with label
dropout to the null label K and sample the guided velocity
v = v(x, t, null) + w (v(x, t, y) - v(x, t, null)) (classifier-free guidance,
Ho & Salimans 2022, as used for flow matching by Zheng et al. 2023 "Guided flows").
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from experiments import likelihood as heldout_likelihood
from experiments import validation as check
from experiments.data import dataset_info
from experiments.families import networks
from experiments.families.protocol import (NO_PROMPT, SampleRequest, as_request, check_conditioning,
                                           guidance_for, labels_for, refuse, refuse_given,
                                           request_options, sampler_options, sampler_spec)
from research.diffusion import guidance as guidance_lib
from research.flow import likelihood as flow_likelihood
from research.flow import ode, paths
from research.losses.flow import cfm_loss


class FlowMatching:
  """CFM family: init / loss / sample over a plain parameter pytree."""
  name = "flow_matching"
  supports_dequantize = True   # trains on config.data.dequantize draws (experiments/data.py)

  @staticmethod
  def check_config(config) -> None:
    networks.check_model_config(config.model, dataset_info(config.data).shape,
                                family="flow_matching")
    flow, s = config.flow, config.sample
    check.choice(flow.path, tuple(paths.PATHS), "config.flow.path")
    check.choice(flow.coupling, tuple(paths.COUPLINGS), "config.flow.coupling")
    check.non_negative_number(flow.sigma, "config.flow.sigma")
    check.number_in(flow.sigma_min, "config.flow.sigma_min", 0.0, 1.0)
    spec = sampler_spec(ode.spec, s.sampler, "config.sample.sampler")
    check.positive_int(s.num_steps, "config.sample.num_steps")
    sampler_options(spec, s.get("options", ""), "config.sample.options")
    if config.model.get("num_classes", 0) and flow.coupling != "independent":
      raise ValueError(f"config.flow.coupling={flow.coupling!r} re-pairs noise and data, which a "
                       f"class-conditional model (config.model.num_classes > 0) cannot follow: "
                       f"use 'independent'")
    check.non_negative_number(s.get("guidance_scale", 1.0), "config.sample.guidance_scale")

  def __init__(self, config, dataset):
    self.config = config
    self.data_shape = tuple(dataset.shape)
    self.dim = math.prod(self.data_shape)
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

  def loss(self, params, batch, key, step):
    del step  # the objective does not change over training
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

  def _resolve(self, request: SampleRequest, n=None):
    s = self.config.sample
    spec = sampler_spec(ode.spec, request.sampler or s.sampler, "SampleRequest.sampler")
    options = request_options(spec, request, self.config)
    if not spec.takes_num_steps and request.num_steps is not None:
      refuse(self.name, "num_steps", request.num_steps,
             f"the {spec.name!r} solver chooses its own steps")
    refuse_given(self.name, request, {"clip_x0": "a flow has no x0 prediction to clip",
                                      **NO_PROMPT})
    check_conditioning(self.name, request, self.num_classes, n)
    return spec, request.num_steps or s.num_steps, options

  def check_request(self, request: SampleRequest | None, n: int | None = None) -> None:
    """Every refusal of sample(): solver, num_steps (not for adaptive solvers), options, labels."""
    self._resolve(as_request(request), n)

  def describe(self, request: SampleRequest) -> str:
    """The evaluation file tag: <solver>_<num_steps>, or <solver> for an adaptive one."""
    spec, num_steps, _ = self._resolve(as_request(request))
    return f"{spec.name}_{num_steps}" if spec.takes_num_steps else spec.name

  def sample(self, params, key, n: int, request: SampleRequest | None = None):
    """Integrate the learned ODE from N(0, I) noise; returns (x1, {"nfe": ...}).

    request (None: the config's defaults): solver name, num_steps (fixed-step solvers),
    the solver's options. Conditional models: labels (n,) (default 0, 1, ..., K-1, 0, ...)
    and the guidance scale w (default config.sample.guidance_scale).
    """
    request = as_request(request)
    spec, num_steps, options = self._resolve(request, n)
    x0 = jax.random.normal(key, (n, *self.data_shape), jnp.float32)
    if self.conditional:
      v = self.guided_velocity_fn(params, labels_for(request, n, self.num_classes),
                                  guidance_for(request, self.config))
    else:
      v = self.velocity_fn(params)
    # The registered solver: solver(velocity_fn, x0, [num_steps=N,] **options) -> (x1, nfe).
    if not spec.takes_num_steps:   # adaptive: the solver reports its own NFE
      x1, nfe = spec.fn(v, x0, **options)
      return x1, {"nfe": nfe}
    x1, _ = spec.fn(v, x0, num_steps=num_steps, **options)
    return x1, {"nfe": spec.count_nfe(num_steps, **options)}

  # -- likelihood ----------------------------------------------------------------------
  def heldout_bits_per_dim(self, params, key, dataset, *, num_images: int = 0,
                           exact: bool = False, num_probes: int = 1, batch_size: int = 0,
                           rtol: float = 1e-5, atol: float = 1e-5) -> dict:
    """Held-out bits/dim of the ODE density on dequantized test images, with its stderr.

    log p_1(y) = log N(x_0; 0, I) - int_0^1 div v(x_t, t) dt (research/flow/likelihood.py;
    Chen et al. 2018, Grathwohl et al. 2019), for y the first num_images (0: all) test
    images dequantized over L = config.data.dequantize levels, then
    bits/dim = (-log p(y) - log_jacobian + D log L) / (D ln 2) per image (docs/likelihood.md):
    a bound on the discrete NLL (Jensen), exact up to the solver's tolerance with
    exact=True (D Jacobian-vector products per evaluation), an unbiased estimate of it
    with Hutchinson's num_probes Rademacher probes otherwise. batch_size: images per
    jitted batch (0: 8 for the exact trace, 64 for Hutchinson's).

    Returns {"bits_per_dim", "bits_per_dim_stderr", "num_images", "per_image_bits",
    "nfe_mean", "compile_seconds", "seconds"} (experiments/likelihood.py ode_bits_per_dim).
    Raises ValueError naming config.data.dequantize for a model trained on the discrete
    levels, config.model.num_classes for a class-conditional one (p(x | y), not p(x)).
    """
    levels = heldout_likelihood.num_levels(self.config)

    def log_likelihood(params, key, x):
      return flow_likelihood.log_likelihood(key, self.velocity_fn(params), x,
                                            hutchinson=not exact, num_probes=num_probes,
                                            rtol=rtol, atol=atol)

    return heldout_likelihood.ode_bits_per_dim(
        log_likelihood, params, key, dataset, num_levels=levels, num_images=num_images,
        batch_size=batch_size or (8 if exact else 64))
