"""Normalizing flows (exact likelihood, one-pass sampling) as a trainer plug-in: family "flow".

Model: x = G(z), z ~ N(0, I), G a stack of bijectors from research/flows/architectures.py
(config.flow.arch), trained by maximum likelihood:

  log p(x) = log N(G^{-1}(x); 0, I) + log|det dG^{-1}/dx|       (research/flows/distribution.py)

Data:
  2-D toys: the points as they are; loss = mean NLL in nats per point.
  digits (8 x 8 in [0, 1] on L = config.flow.levels = 17 grey levels, pixel_range "unit"):
    uniform dequantization y = (k + u) / L, k = x (L - 1), u ~ U(0, 1)^D, a fresh u per
    batch, and a multi-scale flow with logit preprocessing on y in [0, 1]^D (arch "glow":
    affine couplings, "spline": rational-quadratic couplings). Each k owns a cell of
    volume L^-D, so by Jensen -log P(k) <= E_u[-log p(y)] + D log L (Theis et al. 2016;
    Ho et al. 2019); the loss is that bound in nats per dimension, and evaluation reports
    bits/dim = (E_u[-log p(y)] + D log L) / (D ln 2). Samples are quantised back to the
    levels, floor(L y) / (L - 1), so they have the data's format.

Evaluation (`evaluate`): the held-out NLL with its standard error over examples: toys
nats per point on config.flow.eval_num fresh points; digits bits/dim of the whole test
split (each image averaged over config.flow.eval_draws dequantizations) and of as many
training images. On the analytic mixtures (ring8, grid25) also the data's entropy H
(grid quadrature, research/data/gmm_entropy.py) and KL(p_data || p_model) = E_p[log p -
log q], estimated on the same held-out points (paired, so its standard error is that of
the difference); it equals NLL - H and must come out >= 0 within its error.

Sampling: the registry research/flows/samplers.py ("exact", option temperature).
Figures: the learned density on a grid beside the true density (analytic mixtures) or
a histogram of the data (other toys); digits: a grid of samples.
"""

from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from experiments import validation as check
from experiments.data import DIGITS_NAMES, dataset_info
from experiments.families.protocol import (NO_PROMPT, SampleRequest, as_request, refuse,
                                           refuse_given, request_options, sampler_options,
                                           sampler_spec)
from research.data import gmm_entropy, toy
from research.flows import architectures, samplers
from research.flows.distribution import Flow
from research.metrics import likelihood as lik

REFUSED = {"num_steps": "it samples in one pass of the flow",
           "labels": "the flow is unconditional", "guidance_scale": "the flow is unconditional",
           "clip_x0": "it has no x0 prediction to clip", **NO_PROMPT}
IMAGE_ARCHS = ("glow", "spline")
INIT_BATCH = 512   # data points of the data-dependent (ActNorm) initialisation


class NormalizingFlow:
  """Flow family: init / loss / sample / evaluate / figures over a plain parameter pytree."""
  name = "flow"
  num_classes = 0
  conditional = False

  @staticmethod
  def check_config(config) -> None:
    f = config.flow
    info = dataset_info(config.data)
    if info.text:
      raise ValueError(f"config.data.name={info.name!r} is text; the flow family models 2-D "
                       f"points and the digits images")
    if info.image:
      if info.name not in DIGITS_NAMES:
        raise ValueError(f"config.data.name={info.name!r}: the flow family's image models train "
                         f"on the in-memory digits sets {DIGITS_NAMES}")
      check.choice(f.arch, IMAGE_ARCHS, "config.flow.arch")
      if info.pixel_range != "unit":
        raise ValueError(f"config.data.pixel_range must be 'unit' for a flow on images (the "
                         f"dequantised pixels live in [0, 1]), got {info.pixel_range!r}")
      levels = check.positive_int(f.get("levels"), "config.flow.levels")
      if levels < 2:
        raise ValueError(f"config.flow.levels must be >= 2, got {levels}")
      check.positive_int(f.hidden, "config.flow.hidden")
      for name in ("num_scales", "steps_per_scale", "eval_draws"):
        check.positive_int(f.get(name), f"config.flow.{name}")
      check.number_in(f.get("logit_alpha", 0.05), "config.flow.logit_alpha", 0.0, 0.5)
      factor = 2 ** f.num_scales
      if info.shape[0] % factor or info.shape[1] % factor:
        raise ValueError(f"config.flow.num_scales={f.num_scales}: the {info.shape[0]}x"
                         f"{info.shape[1]} images of {info.name} are not divisible by {factor}")
    else:
      check.choice(f.arch, architectures.VECTOR_ARCHS, "config.flow.arch")
      check.positive_ints(f.hidden, "config.flow.hidden")
      check.positive_int(f.num_layers, "config.flow.num_layers")
      check.positive_int(f.get("eval_num"), "config.flow.eval_num")
    if f.arch == "spline" or info.image:
      bins = check.integer(f.get("num_bins", 8), "config.flow.num_bins")
      if bins < 2:
        raise ValueError(f"config.flow.num_bins must be >= 2 (a spline needs two bins), got "
                         f"{bins}")
      check.positive_number(f.get("bound", 3.0), "config.flow.bound")
    check.positive_number(f.get("scale_bound", 3.0), "config.flow.scale_bound")
    spec = sampler_spec(samplers.spec, config.sample.sampler, "config.sample.sampler")
    sampler_options(spec, config.sample.get("options", ""), "config.sample.options")

  def __init__(self, config, dataset):
    self.config, self.f, self.dataset = config, config.flow, dataset
    self.data_shape = tuple(dataset.shape)
    self.dim = math.prod(self.data_shape)
    self.image = len(self.data_shape) == 3
    f = self.f
    if self.image:
      self.levels = int(f.levels)
      try:   # dequantization needs the data on the L integer levels (digits16 is interpolated)
        lik.dequantize(jax.random.key(0), np.asarray(dataset.train) * (self.levels - 1),
                       self.levels)
      except ValueError as e:
        raise ValueError(f"config.flow.levels={self.levels}: the {dataset.name!r} pixels times "
                         f"{self.levels - 1} are not integer levels, so they cannot be "
                         f"dequantized ({e})") from None
      bijector = architectures.image_flow(
          self.data_shape, num_scales=f.num_scales, steps_per_scale=f.steps_per_scale,
          hidden=f.hidden, transformer_name="affine" if f.arch == "glow" else "spline",
          num_bins=f.get("num_bins", 8), bound=f.get("bound", 3.0),
          logit_alpha=f.get("logit_alpha", 0.05))
    else:
      self.levels = 0
      bijector = architectures.vector_flow(
          f.arch, self.dim, num_layers=f.num_layers, hidden=tuple(f.hidden),
          num_bins=f.get("num_bins", 8), bound=f.get("bound", 4.0),
          scale_bound=f.get("scale_bound", 3.0))
    self.flow = Flow(bijector, self.data_shape)

  # -- data ----------------------------------------------------------------------------
  def dequantize(self, key, x):
    """Images: y = (k + u) / L on the training levels k = x (L - 1); points unchanged."""
    if not self.image:
      return x
    return lik.dequantize(key, jnp.round(x * (self.levels - 1)), self.levels)

  def init(self, key: jax.Array):
    """Parameters; ActNorm layers initialise from INIT_BATCH dequantised training examples."""
    k_data, k_deq, k_init = jax.random.split(key, 3)
    x = self.dequantize(k_deq, self.dataset.sample(k_data, INIT_BATCH))
    return {"flow": self.flow.init(k_init, x)}

  def loss(self, params, batch, key, step):
    """Mean NLL: nats per point (toys), the dequantization bound in nats per dim (images)."""
    del step
    nll = -self.flow.log_prob(params["flow"], self.dequantize(key, batch))
    metrics = {"nll": jnp.mean(nll)}
    if self.image:
      bits = lik.dequantized_bits_per_dim(nll, self.dim, self.levels)
      metrics["bits_per_dim"] = jnp.mean(bits)
      return jnp.mean(nll) / self.dim, metrics
    return jnp.mean(nll), metrics

  # -- sampling ------------------------------------------------------------------------
  def _resolve(self, request: SampleRequest):
    spec = sampler_spec(samplers.spec, request.sampler or self.config.sample.sampler,
                        "SampleRequest.sampler")
    options = request_options(spec, request, self.config)
    refuse_given(self.name, request, REFUSED)
    return spec, options

  def check_request(self, request: SampleRequest | None, n: int | None = None) -> None:
    """Only the sampler ("exact") and its option temperature can be asked for."""
    del n
    self._resolve(as_request(request))

  def describe(self, request: SampleRequest) -> str:
    """The evaluation file tag: the sampler and a non-default temperature."""
    spec, options = self._resolve(as_request(request))
    temperature = options.get("temperature", 1.0)
    return spec.name if temperature == 1.0 else f"{spec.name}_T{temperature:g}"

  def sample(self, params, key, n: int, request: SampleRequest | None = None):
    """n draws of the flow (images quantised to the data's levels); returns (x, {"nfe": 1})."""
    spec, options = self._resolve(as_request(request))
    x = spec.fn(key, self.flow, params["flow"], n, **options)
    if self.image:
      k = jnp.clip(jnp.floor(x * self.levels), 0, self.levels - 1)
      x = k / (self.levels - 1)
    return x, {"nfe": spec.count_nfe(None, **options)}

  # -- evaluation ----------------------------------------------------------------------
  @functools.cached_property
  def _log_prob(self):
    return jax.jit(self.flow.log_prob)

  def _image_bits(self, params, key, images) -> np.ndarray:
    """Per-image bits/dim of the dequantization bound, E_u averaged over eval_draws draws."""
    k = jnp.round(jnp.asarray(images) * (self.levels - 1))
    total = np.zeros(k.shape[0])
    for d in range(self.f.eval_draws):
      y = lik.dequantize(jax.random.fold_in(key, d), k, self.levels)
      total += np.asarray(-self._log_prob(params, y), np.float64)
    return np.asarray(lik.dequantized_bits_per_dim(total / self.f.eval_draws, self.dim,
                                                   self.levels))

  def evaluate(self, params, key, dataset) -> dict:
    """Held-out NLL with its standard error; on analytic mixtures also H and KL (see top)."""
    params = params["flow"]
    if self.image:
      k_test, k_train = jax.random.split(key)
      test = self._image_bits(params, k_test, dataset.test)
      train = self._image_bits(params, k_train, dataset.train[:dataset.test.shape[0]])
      return {"test_bits_per_dim": float(test.mean()),
              "test_bits_per_dim_stderr": float(test.std(ddof=1) / math.sqrt(test.size)),
              "train_bits_per_dim": float(train.mean()),
              "likelihood_convention": f"uniform dequantization bound, {self.levels} levels"}
    x = jax.jit(dataset.heldout, static_argnums=1)(key, self.f.eval_num)
    nll = -np.asarray(self._log_prob(params, x), np.float64)
    out = {"test_nll": float(nll.mean()),
           "test_nll_stderr": float(nll.std(ddof=1) / math.sqrt(nll.size))}
    if dataset.name in toy.MIXTURE_NAMES:
      mixture = toy.mixture(dataset.name)
      diff = gmm_entropy.log_prob_np(mixture, np.asarray(x, np.float64)) + nll
      entropy = _entropy(dataset.name)
      out.update({"data_entropy": entropy, "kl": float(diff.mean()),
                  "kl_stderr": float(diff.std(ddof=1) / math.sqrt(diff.size)),
                  "nll_minus_entropy": out["test_nll"] - entropy})
    return out

  # -- figures -------------------------------------------------------------------------
  def density_grid(self, params, *, extent=(-3.5, 3.5), size: int = 160):
    """(model density, reference density) on a size x size grid over extent^2 (row i: y =
    the i-th grid value); the reference is the exact mixture density, or a normalised
    histogram of 10^6 data points for the other toys."""
    axis = np.linspace(*extent, size)
    xx, yy = np.meshgrid(axis, axis)
    grid = np.stack([xx.ravel(), yy.ravel()], -1).astype(np.float32)
    model = np.exp(np.asarray(self._log_prob(params["flow"], jnp.asarray(grid)), np.float64))
    return model.reshape(size, size), toy.reference_density(self.dataset.name, axis)

  def figures(self, params, key, workdir, step) -> list:
    """Toys: the learned density beside the true one; digits: a grid of samples."""
    from experiments import run_figures
    path = os.path.join(workdir, f"flow_{{}}_{step:07d}.png")
    if self.image:
      x, _ = self.sample(params, key, 100)
      return [run_figures.image_canvas(path.format("samples"), np.asarray(x), 10,
                                       title=f"flow samples (T = 1), step {step}")]
    model, ref = self.density_grid(params)
    truth = "true density" if self.dataset.name in toy.MIXTURE_NAMES else "data histogram"
    return [run_figures.density_panels(
        path.format("density"), [(f"{self.f.arch} flow density", model), (truth, ref)],
        (-3.5, 3.5), title=f"{self.dataset.name}, step {step}")]


@functools.cache
def _entropy(name: str) -> float:
  return gmm_entropy.entropy(toy.mixture(name))
