"""Diffusion models (Ho et al. 2020; Song et al. 2021) as a trainer plug-in.

Time convention: continuous t in [0, 1], t = 1 is noise, x_t = alpha(t) x0 +
sigma(t) eps (research/diffusion/schedules.py); discrete DDPM schedules are
wrapped as continuous time, t_n = (n + 1)/T.

The network (experiments/families/networks.py: an MLP for points, a U-Net for
images, config.model.kind) f(x_in, tau[, y]) outputs the prediction of type
config.diffusion.prediction ("eps", "x0", "v" or "score"):

* time input tau = schedule.model_time(t): the DDPM index T t - 1 in [0, T - 1]
  for discrete schedules (embedded with time_scale 1, as in DDPM), continuous t
  in [0, 1] otherwise (embedded with time_scale 1000), so the sinusoidal
  embedding sees the same range [0, ~1000] either way;
* input x_in = x for VP schedules, x / sqrt(1 + sigma^2) for VE (EDM's c_in with
  sigma_data = 1, Karras et al. 2022), so the network sees unit-scale inputs;
* for "score", model_fn returns f / sigma (Song & Ermon 2020, "Improved
  techniques", the noise-conditional score scaled by 1/sigma); the other
  predictions are f itself.

Class-conditional models (config.model.num_classes = K > 0, U-Net only) train on
(x, y) batches with each label replaced by the null label K with probability
config.model.label_dropout, and sample with classifier-free guidance (Ho &
Salimans 2022) at config.sample.guidance_scale (or SampleRequest.guidance_scale):
out = out_null + w (out_y - out_null); w = 1 is the plain
conditional model.

Likelihood: `heldout_bits_per_dim` integrates the probability-flow ODE from
dequantized held-out images (t = t_min) to the prior at t = 1 with the divergence,
exact or Hutchinson's estimate (research/diffusion/likelihood.py), and reports bits/dim
under the dequantization convention of docs/likelihood.md; the model must have been
trained on dequantized digits (config.data.dequantize = L; `supports_dequantize`). The
default evaluation does not run it.

Training: research.losses.diffusion.diffusion_loss. Sampling: x_T =
sqrt(alpha(1)^2 + sigma(1)^2) z, z ~ N(0, I) (N(0, I) for VP, ~N(0, sigma_max^2 I)
for VE), then any sampler registered in research.diffusion.samplers that needs no distilled
model (`spec.requires is None`: `lcm` is refused, it needs family "lcm"), read from its
registry entry `samplers.spec(name)`: options checked with spec.parse_options (the
family sets `prediction` itself), the model clipped with adapters.clip_x0 and
converted with adapters.with_prediction when the entry requires a prediction type
(consistency sampling: "x0"); the whole sampler is jitted once per (sampler,
num_steps, options, n).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from experiments import likelihood as heldout_likelihood
from experiments import validation as check
from experiments.data import dataset_info
from experiments.families import networks
from experiments.families.protocol import (NO_PROMPT, SampleRequest, as_request,
                                           check_conditioning, guidance_for, labels_for,
                                           refuse_given, request_options, sampler_options,
                                           sampler_spec)
from research.diffusion import adapters, samplers
from research.diffusion import likelihood as diffusion_likelihood
from research.diffusion import schedules as schedules_lib
from research.losses import diffusion as diffusion_loss_lib

# config.diffusion.schedule -> a Schedule (num_train_steps T for the discrete ones).
SCHEDULES = {
    "linear": lambda T: schedules_lib.discrete_vp(schedules_lib.linear_betas(T)),
    "scaled_linear": lambda T: schedules_lib.discrete_vp(schedules_lib.scaled_linear_betas(T)),
    "cosine": lambda T: schedules_lib.discrete_vp(schedules_lib.cosine_betas(T)),
    "vp": lambda T: schedules_lib.continuous_vp(),
    "cosine_vp": lambda T: schedules_lib.cosine_vp(),
    "ve": lambda T: schedules_lib.ve(),
}
DISCRETE_SCHEDULES = ("linear", "scaled_linear", "cosine")


def make_schedule(diffusion_config) -> schedules_lib.Schedule:
  """The Schedule named by config.diffusion.schedule (T = config.diffusion.num_train_steps)."""
  return SCHEDULES[diffusion_config.schedule](diffusion_config.num_train_steps)


# Options of every diffusion sampler that the family sets itself.
_FIXED = {"prediction": "is set by the family (config.diffusion.prediction; the model is "
                        "converted to what the sampler needs)"}


def _check_clip_x0(clip_x0, pixel_range, name="clip_x0", *, latent_workdir="") -> None:
  check.choice(clip_x0, adapters.CLIP_MODES, name)
  if clip_x0 != "none" and latent_workdir:
    raise ValueError(f"{name}={clip_x0!r} clips x0 to [-1, 1], but config.data."
                     f"autoencoder_workdir={latent_workdir!r} trains on scaled autoencoder "
                     f"latents, which are not in [-1, 1]: use 'none'")
  if clip_x0 != "none" and pixel_range != "symmetric":
    raise ValueError(f"{name}={clip_x0!r} clips x0 to [-1, 1]: it needs image data in [-1, 1] "
                     f"(config.data.pixel_range = 'symmetric'), got pixel_range={pixel_range!r}")


def _hashable(value):
  if isinstance(value, (list, tuple)):
    return tuple(_hashable(v) for v in value)
  return value


def refuse_distilled_only(spec, field: str) -> None:
  """ValueError naming `field` when the sampler needs a distilled model (SamplerSpec.requires),
  e.g. `lcm`: a plain diffusion network is not a consistency function."""
  if spec.requires is not None:
    raise ValueError(f"{field}={spec.name!r} needs an LCM-distilled model (requires="
                     f"{spec.requires!r}; train one with family 'lcm'), and this diffusion"
                     f" family's network is not distilled; use e.g. 'dpmpp_2m' or 'ddim'")


def check_sample_config(config) -> None:
  """config.sample for a registry sampler: name, num_steps, options (string or mapping), w."""
  s = config.sample
  spec = sampler_spec(samplers.spec, s.sampler, "config.sample.sampler")
  refuse_distilled_only(spec, "config.sample.sampler")
  check.positive_int(s.num_steps, "config.sample.num_steps")
  sampler_options(spec, s.get("options", ""), "config.sample.options", _FIXED)
  check.non_negative_number(s.get("guidance_scale", 1.0), "config.sample.guidance_scale")


class Diffusion:
  """Diffusion family: init / loss / sample over a plain parameter pytree."""
  name = "diffusion"
  supports_dequantize = True   # trains on config.data.dequantize draws (experiments/data.py)

  @staticmethod
  def check_config(config) -> None:
    networks.check_model_config(config.model, dataset_info(config.data).shape,
                                family="diffusion")
    d = config.diffusion
    check.choice(d.schedule, tuple(SCHEDULES), "config.diffusion.schedule")
    check.positive_int(d.num_train_steps, "config.diffusion.num_train_steps")
    check.choice(d.prediction, adapters.PREDICTIONS, "config.diffusion.prediction")
    check.choice(d.weighting, diffusion_loss_lib.WEIGHTINGS, "config.diffusion.weighting")
    check.choice(d.t_sampler, diffusion_loss_lib.T_SAMPLERS, "config.diffusion.t_sampler")
    check.positive_number(d.min_snr_gamma, "config.diffusion.min_snr_gamma")
    check_sample_config(config)
    _check_clip_x0(config.sample.get("clip_x0", "none"), config.data.get("pixel_range", "unit"),
                   "config.sample.clip_x0",
                   latent_workdir=config.data.get("autoencoder_workdir", ""))

  def __init__(self, config, dataset):
    self.config = config
    self.data_shape = tuple(dataset.shape)
    self.dim = math.prod(self.data_shape)
    self.schedule = make_schedule(config.diffusion)
    self.prediction = config.diffusion.prediction
    self.net = networks.make_network(config.model, self.data_shape,
                                     time_scale=1.0 if self.schedule.is_discrete else 1000.0)
    self.num_classes = self.net.num_classes
    self.conditional = self.num_classes > 0

  def init(self, key: jax.Array):
    return self.net.init(key)

  def model_fn(self, params, y=None, dropout_key=None):
    """model_fn(x, t) -> prediction of type config.diffusion.prediction; t continuous, (batch,).

    y: labels (batch,) for a conditional model (the null label K for unconditional output).
    """
    schedule, prediction = self.schedule, self.prediction

    def fn(x, t):
      t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
      x_in = x
      if not schedule.is_vp:
        x_in = x * jax.lax.rsqrt(1.0 + schedule.sigma(t) ** 2).reshape((-1,) + (1,) * (x.ndim - 1))
      out = self.net.apply(params, x_in, schedule.model_time(t), y, dropout_key=dropout_key)
      if prediction == "score":
        out = out / schedule.sigma(t).reshape((-1,) + (1,) * (x.ndim - 1))
      return out

    return fn

  def loss(self, params, batch, key, step):
    del step  # the objective does not change over training
    d, m = self.config.diffusion, self.config.model
    batch, y, dropout_key = networks.training_inputs(m, batch, key, self.num_classes)
    return diffusion_loss_lib.diffusion_loss(
        self.model_fn(params, y, dropout_key), key, batch, self.schedule, prediction=d.prediction,
        weighting=d.weighting, t_sampler=d.t_sampler, min_snr_gamma=d.min_snr_gamma)

  # -- sampling ------------------------------------------------------------------------
  def _resolve(self, request: SampleRequest, n=None):
    """(spec, num_steps, options, clip_x0) of a request, every field checked (nothing compiled)."""
    s = self.config.sample
    spec = sampler_spec(samplers.spec, request.sampler or s.sampler, "SampleRequest.sampler")
    refuse_distilled_only(spec, "SampleRequest.sampler")
    num_steps = request.num_steps or s.num_steps
    options = request_options(spec, request, self.config, _FIXED)
    clip_x0 = request.clip_x0 or s.get("clip_x0", "none")
    _check_clip_x0(clip_x0, self.config.data.get("pixel_range", "unit"),
                   "SampleRequest.clip_x0",
                   latent_workdir=self.config.data.get("autoencoder_workdir", ""))
    check_conditioning(self.name, request, self.num_classes, n)
    refuse_given(self.name, request, NO_PROMPT)
    return spec, num_steps, options, clip_x0

  def check_request(self, request: SampleRequest | None, n: int | None = None) -> None:
    """Every refusal of sample(): sampler, num_steps / options, clip_x0, labels, guidance."""
    self._resolve(as_request(request), n)

  @functools.partial(jax.jit, static_argnames=("self", "n", "sampler", "num_steps", "options",
                                                "guidance_scale", "clip_x0"))
  def _sample(self, params, key, n, sampler, num_steps, options, labels=None, guidance_scale=1.0,
              clip_x0="none"):
    k_prior, k_sampler = jax.random.split(key)
    t_max = jnp.float32(self.schedule.t_max)
    scale = jnp.sqrt(self.schedule.alpha(t_max) ** 2 + self.schedule.sigma(t_max) ** 2)
    x_T = scale * jax.random.normal(k_prior, (n, *self.data_shape), jnp.float32)
    prediction = self.prediction
    if labels is None:
      model_fn = self.model_fn(params)
    else:
      model_fn = adapters.classifier_free_guidance(
          lambda x, t, y: self.model_fn(params, y)(x, t), labels,
          guidance_scale=guidance_scale, null_label=self.num_classes)
    # Clipping acts on the guided output, as Imagen thresholds the guided x0.
    model_fn = adapters.clip_x0(model_fn, self.schedule, prediction, clip_x0)
    spec = samplers.spec(sampler)
    if spec.prediction is not None:   # e.g. consistency sampling needs an x0 model
      model_fn = adapters.with_prediction(model_fn, self.schedule, prediction, spec.prediction)
      prediction = spec.prediction
    return spec.fn(k_sampler, model_fn, x_T, self.schedule, num_steps=num_steps,
                   prediction=prediction, **dict(options))

  def sample(self, params, key, n: int, request: SampleRequest | None = None):
    """Draw n samples; returns (x, {"nfe", "network_passes_per_example"}).

    request (None: the config's defaults): sampler (default config.sample.sampler),
    num_steps, options (replace config.sample.options, which apply to the config's own
    sampler only). Conditional models: labels (n,) (default 0, 1, ..., K-1, 0, ...) and
    classifier-free guidance scale w (default config.sample.guidance_scale). clip_x0
    (default config.sample.clip_x0, "none"): "static" clips the model's implied x0 to
    [-1, 1] at every network call (DDPM's clip_denoised), "dynamic" applies Imagen's
    dynamic thresholding (p = 0.995); image data in [-1, 1] only.
    """
    request = as_request(request)
    spec, num_steps, options, clip_x0 = self._resolve(request, n)
    labels = labels_for(request, n, self.num_classes)
    w = guidance_for(request, self.config) if self.conditional else 1.0
    options = {k: _hashable(v) for k, v in options.items()}
    x = self._sample(params, key, int(n), spec.name, int(num_steps),
                     tuple(sorted(options.items())), labels, w, clip_x0)
    nfe = spec.count_nfe(num_steps, **options)
    passes = 1 if not self.conditional or w in (0.0, 1.0) else 2
    return x, {"nfe": nfe, "network_passes_per_example": nfe * passes}

  # -- likelihood ----------------------------------------------------------------------
  def heldout_bits_per_dim(self, params, key, dataset, *, num_images: int = 0,
                           exact: bool = False, num_probes: int = 1, batch_size: int = 0,
                           rtol: float = 1e-5, atol: float = 1e-5) -> dict:
    """Held-out bits/dim of the probability-flow ODE density on dequantized test images.

    log p_{t_min}(y) = log N(x_1; 0, I) + int_{t_min}^1 div f(x_t, t) dt with the PF-ODE
    drift f (research/diffusion/likelihood.py; Song et al. 2021, Sec. D.2), for y the
    first num_images (0: all) test images dequantized over L = config.data.dequantize
    levels, then bits/dim = (-log p(y) - log_jacobian + D log L) / (D ln 2) per image
    (docs/likelihood.md). t_min = the schedule's (1/T for discrete schedules): the
    density is the model's at t_min, the data smoothed by sigma(t_min). exact=True: the
    trace from D Jacobian-vector products per evaluation; else Hutchinson's estimate with
    num_probes Rademacher probes (unbiased). batch_size: images per jitted batch (0: 8
    for the exact trace, 64 for Hutchinson's).

    Returns {"bits_per_dim", "bits_per_dim_stderr", "num_images", "per_image_bits",
    "nfe_mean", "compile_seconds", "seconds"} (experiments/likelihood.py ode_bits_per_dim).
    Raises ValueError naming config.data.dequantize for a model trained on the discrete
    levels, config.model.num_classes for a class-conditional one.
    """
    levels = heldout_likelihood.num_levels(self.config)

    def log_likelihood(params, key, x):
      return diffusion_likelihood.log_likelihood(
          key, self.model_fn(params), x, self.schedule, prediction=self.prediction,
          hutchinson=not exact, num_probes=num_probes, rtol=rtol, atol=atol)

    return heldout_likelihood.ode_bits_per_dim(
        log_likelihood, params, key, dataset, num_levels=levels, num_images=num_images,
        batch_size=batch_size or (8 if exact else 64))
