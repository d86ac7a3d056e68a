"""Consistency models (Song et al. 2023; Song & Dhariwal 2023) as a trainer plug-in.

Noise convention: EDM's VE form x_sigma = x0 + sigma z, sigma in [sigma_min,
sigma_max] (research/diffusion/consistency.py). The network F (an MLP for points,
a U-Net for images: config.model.kind, experiments/families/networks.py) sits
inside f(x, s) = c_skip(s) x + c_out(s) F(c_in x, c_noise) (f(x, smin) = x exactly).

Modes (config.consistency.mode):
  "ict"  improved consistency training: theta- = stop_gradient(theta), N(k) doubling
         curriculum, log-normal noise index, 1/(s_{n+1} - s_n) weight, pseudo-Huber.
  "ct"   original consistency training: EMA target network with mu(k) = exp(s0 ln mu0 / N(k)),
         N(k) square-root curriculum, uniform index, squared L2.
  "cd"   consistency distillation from a trained diffusion workdir
         (config.consistency.teacher_workdir, restored with experiments.sampling.load):
         x_lo is one Heun (or Euler) step of the teacher's PF-ODE in sigma space;
         fixed N = config.consistency.num_points, EMA target with fixed decay mu0.

Parameter groups: {"online": F's params (the only group the optimizer trains),
"target": the EMA target network (ct, cd)}. The curriculum step k is the train
step the trainer passes to the loss and to after_step(params, step), which moves
the target by theta- <- mu(k) theta- + (1 - mu(k)) theta (the evaluation EMA of
the target is unused).

Sampling: CM Algorithm 1 with the trainer's EMA of "online"; num_steps = NFE
(1: one-step generation), intermediate noise levels config.sample.sigmas (or Karras
defaults, research.diffusion.consistency.sample_sigmas; for cd snapped to the nearest
level of its fixed training grid, since a CD model is fit only there: a level between
two grid levels samples markedly worse than either). Dropout (U-Net): one dropout
key is closed into both loss passes, online and target, as in iCT.

Class-conditional models (config.model.num_classes = K > 0; ict/ct only) train
with label dropout to the null label K and sample with classifier-free guidance
on the consistency function's output, f = f(x, s, null) + w (f(x, s, y) - f(x, s, null))
(w = 1: plain conditional).
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp

from experiments import validation as check
from experiments.data import dataset_info
from experiments.families import networks
from experiments.families import teacher as teacher_lib
from experiments.families.protocol import (NO_PROMPT, Phase, SampleRequest, as_request,
                                           check_conditioning, guidance_for, labels_for, refuse,
                                           refuse_given, request_options, sampler_options)
from research.diffusion import guidance as guidance_lib
from research.diffusion import consistency as cm
from research.diffusion import samplers
from research.losses import consistency as losses
from research.metrics import distances

MODES = ("ict", "ct", "cd")


def _fixed_options(spec) -> dict:
  """Of the consistency sampler's options only the levels `sigmas` are free at sampling
  time; the others (sigma_min, rho, ...) are those the model was trained with."""
  why = "is fixed by the trained model (config.consistency); only 'sigmas' can be given"
  return {k: why for k in spec.options if k != "sigmas"}


def _teacher_denoiser(workdir: str):
  """D(x; sigma) of the diffusion model trained in `workdir` (its EMA params).

  The diffusion family exposes its network as model_fn(params) -> (x_t, t) -> prediction,
  plus its schedule and prediction type; the denoiser converts to EDM sigma space.
  """
  t = teacher_lib.load_diffusion_teacher(workdir, "config.consistency.teacher_workdir")
  model_fn = t.family.model_fn(t.params)
  return cm.denoiser_from_diffusion(model_fn, t.family.schedule, t.family.prediction), t.config


class Consistency:
  """Consistency family: init / phases / after_step / sample / evaluate over plain pytrees."""
  name = "consistency"

  @staticmethod
  def check_config(config) -> None:
    networks.check_model_config(config.model, dataset_info(config.data).shape,
                                family="consistency")
    c = config.consistency
    check.choice(c.mode, MODES, "config.consistency.mode")
    if not (check.is_number(c.sigma_min) and check.is_number(c.sigma_max)
            and 0 < c.sigma_min < c.sigma_max and math.isfinite(c.sigma_max)):
      raise ValueError(f"config.consistency.sigma_min/sigma_max must satisfy 0 < sigma_min < "
                       f"sigma_max < inf, got {c.sigma_min!r}, {c.sigma_max!r}")
    check.positive_number(c.sigma_data, "config.consistency.sigma_data")
    check.positive_number(c.rho, "config.consistency.rho")
    if c.mode in ("ict", "ct"):
      check.positive_int(c.s0, "config.consistency.s0")
      check.positive_int(c.s1, "config.consistency.s1")
      if c.s0 > c.s1:
        raise ValueError(f"config.consistency.s0/s1 must satisfy 1 <= s0 <= s1, "
                         f"got s0={c.s0!r}, s1={c.s1!r}")
    if c.mode == "cd":
      if not (check.is_int(c.num_points) and c.num_points >= 2):
        raise ValueError(f"config.consistency.num_points must be an integer >= 2, "
                         f"got {c.num_points!r}")
      if not c.teacher_workdir:
        raise ValueError("config.consistency.teacher_workdir must name a trained diffusion "
                         "workdir for mode 'cd', got ''")
      if not os.path.exists(os.path.join(c.teacher_workdir, "config.json")):
        raise ValueError(f"config.consistency.teacher_workdir={c.teacher_workdir!r} holds no "
                         f"config.json: train the teacher there first")
      check.choice(c.teacher_solver, cm.TEACHER_SOLVERS, "config.consistency.teacher_solver")
    if c.mode in ("ct", "cd"):
      check.number_in(c.mu0, "config.consistency.mu0", 0.0, 1.0)
    check.choice(c.index_distribution, losses.INDEX_DISTRIBUTIONS,
                 "config.consistency.index_distribution")
    check.choice(c.distance, losses.DISTANCES, "config.consistency.distance")
    check.choice(c.weighting, losses.WEIGHTINGS, "config.consistency.weighting")
    s = config.sample
    check.choice(s.sampler, ("consistency",), "config.sample.sampler")
    check.positive_int(s.num_steps, "config.sample.num_steps")
    spec = samplers.spec("consistency")
    sampler_options(spec, s.get("options", ""), "config.sample.options", _fixed_options(spec))
    sigmas = tuple(s.get("sigmas", ()))
    if sigmas and (any(not 0 < x <= c.sigma_max for x in sigmas)
                   or any(a <= b for a, b in zip(sigmas, sigmas[1:]))):
      raise ValueError(f"config.sample.sigmas must be decreasing levels in (0, sigma_max], "
                       f"got {sigmas}")
    if config.model.get("num_classes", 0) and c.mode == "cd":
      raise ValueError("config.model.num_classes > 0 (class-conditional) is supported for "
                       "config.consistency.mode 'ict' and 'ct', not 'cd'")
    check.non_negative_number(s.get("guidance_scale", 1.0), "config.sample.guidance_scale")

  def __init__(self, config, dataset):
    self.config = config
    c = config.consistency
    self.mode = c.mode
    self.data_shape = tuple(dataset.shape)
    self.dim = math.prod(self.data_shape)
    self.grid = dict(sigma_min=c.sigma_min, sigma_max=c.sigma_max, rho=c.rho)
    self.max_points = c.num_points if self.mode == "cd" else c.s1 + 1
    self.net = networks.make_network(config.model, self.data_shape,
                                     time_scale=config.model.time_scale)
    self.num_classes = self.net.num_classes
    self.conditional = self.num_classes > 0

    # One jitted sampler (retraced per number of steps / batch shape / guidance only).
    def multistep(p, z, sigmas, key, labels, guidance_scale):
      f = self.consistency_fn(p)
      if labels is not None:
        guided = guidance_lib.classifier_free_guidance(
            lambda x, s, y: self.consistency_fn(p, y)(x, s), labels,
            guidance_scale=guidance_scale, null_label=self.num_classes)
        f = lambda x, s: guided(x, jnp.broadcast_to(s, x.shape[:1]))  # noqa: E731
      return cm.multistep_sample(key, f, z, sigmas, sigma_min=c.sigma_min)

    self._multistep = jax.jit(multistep, static_argnames=("guidance_scale",))
    self._denoiser = None
    if self.mode == "cd":
      self._denoiser, teacher_config = _teacher_denoiser(c.teacher_workdir)
      if teacher_config.data.name != config.data.name:
        raise ValueError(f"config.consistency.teacher_workdir={c.teacher_workdir!r} was trained "
                         f"on {teacher_config.data.name!r}, not config.data.name="
                         f"{config.data.name!r}")

  # -- parameters and the curriculum --------------------------------------------------
  def init(self, key: jax.Array):
    online = self.net.init(key)
    params = {"online": online}
    if self.mode in ("ct", "cd"):
      params["target"] = jax.tree.map(jnp.copy, online)
    return params

  def consistency_fn(self, net_params, y=None, dropout_key=None):
    c = self.config.consistency
    apply = lambda p, x, c_noise: self.net.apply(p, x, c_noise, y, dropout_key=dropout_key)  # noqa: E731
    return cm.consistency_fn(apply, net_params, sigma_data=c.sigma_data, sigma_min=c.sigma_min)

  def num_points(self, step):
    """N(k) at curriculum step k (traced ok)."""
    c, total = self.config.consistency, self.config.train.num_steps
    if self.mode == "ict":
      return cm.ict_num_points(step, total, s0=c.s0, s1=c.s1)
    if self.mode == "ct":
      return cm.ct_num_points(step, total, s0=c.s0, s1=c.s1)
    return jnp.int32(c.num_points)

  def target_decay(self, step):
    """mu(k): CT's exp(s0 ln mu0 / N(k)); CD's constant mu0; iCT has no target (0)."""
    c = self.config.consistency
    if self.mode == "ct":
      return cm.ct_target_decay(self.num_points(step), s0=c.s0, mu0=c.mu0)
    if self.mode == "cd":
      return jnp.float32(c.mu0)
    return jnp.float32(0.0)

  # -- training ---------------------------------------------------------------------
  def loss(self, params, batch, key, step):
    """The consistency loss at curriculum step k = step (the train step)."""
    c, m = self.config.consistency, self.config.model
    batch, y, dropout_key = networks.training_inputs(m, batch, key, self.num_classes)
    f_online = self.consistency_fn(params["online"], y, dropout_key)
    f_target = (f_online if self.mode == "ict"
                else self.consistency_fn(params["target"], y, dropout_key))
    step = jnp.asarray(step, jnp.float32)
    options = dict(num_points=self.num_points(step), max_points=self.max_points, **self.grid,
                   index_distribution=c.index_distribution, distance=c.distance,
                   weighting=c.weighting)
    if self.mode == "cd":
      loss, metrics = losses.cd_loss(f_online, f_target, self._denoiser, key, batch,
                                     solver=c.teacher_solver, **options)
    else:
      loss, metrics = losses.consistency_loss(f_online, f_target, key, batch, **options)
    return loss, {**metrics, "target_decay": self.target_decay(step)}

  def phases(self):
    return [Phase("online", self.loss, group="online")]

  def after_step(self, params, step):
    """target <- mu(k) target + (1 - mu(k)) online at k = step (ct, cd; iCT has no target)."""
    if "target" in params:
      params = dict(params)
      mu = self.target_decay(jnp.asarray(step, jnp.float32))
      online = jax.lax.stop_gradient(params["online"])
      params["target"] = jax.tree.map(lambda t, o: mu * t + (1.0 - mu) * o,
                                      params["target"], online)
    return params

  # -- sampling and evaluation ------------------------------------------------------
  def sample_sigmas(self, num_steps: int):
    """tau_0 = sigma_max > ...: config.sample.sigmas for 1 + len(sigmas) steps, else Karras
    levels (cm.sample_sigmas), for cd snapped to its fixed N-point training grid."""
    c = self.config.consistency
    extra = tuple(self.config.sample.get("sigmas", ()))
    if extra and num_steps == len(extra) + 1:
      return jnp.asarray((c.sigma_max, *extra), jnp.float32)
    sigmas = cm.sample_sigmas(num_steps, **self.grid)
    if self.mode == "cd":
      sigmas = cm.snap_to_grid(sigmas, c.num_points, **self.grid)
    return sigmas

  def _resolve(self, request: SampleRequest, n=None):
    """(num_steps, sigmas or None) of a request, every field checked (nothing compiled)."""
    if request.sampler is not None and request.sampler != "consistency":
      refuse(self.name, "sampler", request.sampler, "its sampler is 'consistency'")
    refuse_given(self.name, request, {"clip_x0": "a consistency function outputs x0 itself",
                                      **NO_PROMPT})
    check_conditioning(self.name, request, self.num_classes, n)
    spec = samplers.spec("consistency")
    options = request_options(spec, request, self.config, _fixed_options(spec))
    num_steps = request.num_steps or self.config.sample.num_steps
    sigmas = options.get("sigmas")
    if sigmas is not None:
      sigmas = jnp.asarray(sigmas, jnp.float32)
      if sigmas.shape != (num_steps,):
        field = "SampleRequest.options" if request.options else "config.sample.options"
        raise ValueError(f"{field} sigmas must have shape ({num_steps},), got {sigmas.shape}")
    return num_steps, sigmas

  def check_request(self, request: SampleRequest | None, n: int | None = None) -> None:
    """Every refusal of sample(): sampler, options (only sigmas), clip_x0, labels, guidance."""
    self._resolve(as_request(request), n)

  def sample(self, params, key, n: int, request: SampleRequest | None = None):
    """CM Algorithm 1 from z ~ N(0, I) at tau_0 = sigma_max; returns (x0, {"nfe": num_steps}).

    request (None: the config's defaults): num_steps, options {"sigmas": (num_steps,)
    levels tau_0 > tau_1 > ...}; conditional models: labels (n,) (default 0, 1, ..., K-1,
    0, ...) and the guidance scale w (default config.sample.guidance_scale).
    """
    request = as_request(request)
    num_steps, sigmas = self._resolve(request, n)
    labels = labels_for(request, n, self.num_classes)
    w = guidance_for(request, self.config) if self.conditional else 1.0
    sigmas = self.sample_sigmas(num_steps) if sigmas is None else sigmas
    k_z, k_steps = jax.random.split(key)
    z = jax.random.normal(k_z, (n, *self.data_shape), jnp.float32)
    x = self._multistep(params["online"], z, sigmas, k_steps, labels, w)
    return x, {"nfe": num_steps}

  def evaluate(self, params, key, dataset) -> dict:
    """W2 of 1-step and 2-step samples to fresh data, and the noise floor (two data draws)."""
    if len(dataset.shape) != 1:
      return {}
    n = self.config.eval.num_samples
    k_ref, k_floor, k_sample = jax.random.split(key, 3)
    ref = dataset.sample(k_ref, n).reshape(n, -1)
    w2_fn = jax.jit(distances.wasserstein2)
    out = {"w2_noise_floor": float(w2_fn(dataset.sample(k_floor, n).reshape(n, -1), ref))}
    for steps in (1, 2):
      x, _ = self.sample(params, jax.random.fold_in(k_sample, steps), n,
                         SampleRequest(num_steps=steps))
      w2 = float(w2_fn(x.reshape(n, -1), ref))
      out[f"w2_{steps}step"] = w2
      out[f"w2_ratio_{steps}step"] = w2 / out["w2_noise_floor"]
    return out
