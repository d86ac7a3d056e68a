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
"target": the EMA target network (ct, cd), "counter": {"step": float32 k}}. The
trainer's loss signature loss(params, batch, key) carries no step, so the curriculum
step k lives in the frozen "counter" group: after_step(params, step) sets it to step + 1
(from the trainer's own step, so it is checkpointed and exact after a resume) and
moves the target by theta- <- mu theta- + (1 - mu) theta. It is float32 because the
trainer's evaluation EMA averages every group (the EMA'd counter and target are unused).

Sampling: CM Algorithm 1 with the trainer's EMA of "online"; num_steps = NFE
(1: one-step generation), intermediate noise levels config.sample.sigmas (or Karras
defaults, research.diffusion.consistency.sample_sigmas; for cd snapped to the nearest
level of its fixed training grid, since a CD model is fit only there: on ring8 a
2-step tau of 2.52, between the grid levels 1.92 and 3.26, gave an energy distance
of 0.0136 vs 0.0032-0.0033 at those two levels). Dropout (U-Net): one dropout
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

from experiments.data import make_dataset
from experiments.families import networks
from research.diffusion import guidance as guidance_lib
from research.diffusion import consistency as cm
from research.losses import consistency as losses
from research.metrics import distances

MODES = ("ict", "ct", "cd")


def _teacher_denoiser(workdir: str):
  """D(x; sigma) of the diffusion model trained in `workdir` (its EMA params), via sampling.load.

  The diffusion family exposes its network as model_fn(params) -> (x_t, t) -> prediction,
  plus its schedule and prediction type; the denoiser converts to EDM sigma space.
  """
  from experiments import sampling  # the trainer imports families: import at use
  run, state = sampling.load(workdir)
  family = run.family
  for attr in ("model_fn", "schedule", "prediction"):
    if not hasattr(family, attr):
      raise ValueError(f"config.consistency.teacher_workdir={workdir!r} holds a "
                       f"{run.config.family!r} run whose family has no {attr!r}: the teacher "
                       f"must be a diffusion model")
  model_fn = family.model_fn(state["ema_params"])
  return cm.denoiser_from_diffusion(model_fn, family.schedule, family.prediction), run.config


class Consistency:
  """Consistency family: init / phases / after_step / sample / evaluate over plain pytrees."""

  @staticmethod
  def check_config(config) -> None:
    c = config.consistency
    if c.mode not in MODES:
      raise ValueError(f"config.consistency.mode must be one of {MODES}, got {c.mode!r}")
    if not 0 < c.sigma_min < c.sigma_max or not math.isfinite(c.sigma_max):
      raise ValueError(f"config.consistency.sigma_min/sigma_max must satisfy 0 < sigma_min < "
                       f"sigma_max < inf, got {c.sigma_min!r}, {c.sigma_max!r}")
    if not c.sigma_data > 0:
      raise ValueError(f"config.consistency.sigma_data must be > 0, got {c.sigma_data!r}")
    if not c.rho > 0:
      raise ValueError(f"config.consistency.rho must be > 0, got {c.rho!r}")
    if c.mode in ("ict", "ct"):
      if not (isinstance(c.s0, int) and isinstance(c.s1, int) and 1 <= c.s0 <= c.s1):
        raise ValueError(f"config.consistency.s0/s1 must be integers with 1 <= s0 <= s1, "
                         f"got s0={c.s0!r}, s1={c.s1!r}")
    if c.mode == "cd":
      if not (isinstance(c.num_points, int) and c.num_points >= 2):
        raise ValueError(f"config.consistency.num_points must be an integer >= 2, "
                         f"got {c.num_points!r}")
      if not c.teacher_workdir:
        raise ValueError("config.consistency.teacher_workdir must name a trained diffusion "
                         "workdir for mode 'cd', got ''")
      if not os.path.exists(os.path.join(c.teacher_workdir, "config.json")):
        raise ValueError(f"config.consistency.teacher_workdir={c.teacher_workdir!r} holds no "
                         f"config.json: train the teacher there first")
      if c.teacher_solver not in cm.TEACHER_SOLVERS:
        raise ValueError(f"config.consistency.teacher_solver must be one of "
                         f"{cm.TEACHER_SOLVERS}, got {c.teacher_solver!r}")
    if c.mode in ("ct", "cd") and not 0.0 <= c.mu0 < 1.0:
      raise ValueError(f"config.consistency.mu0 must be in [0, 1), got {c.mu0!r}")
    if c.index_distribution not in losses.INDEX_DISTRIBUTIONS:
      raise ValueError(f"config.consistency.index_distribution must be one of "
                       f"{losses.INDEX_DISTRIBUTIONS}, got {c.index_distribution!r}")
    if c.distance not in losses.DISTANCES:
      raise ValueError(f"config.consistency.distance must be one of {losses.DISTANCES}, "
                       f"got {c.distance!r}")
    if c.weighting not in losses.WEIGHTINGS:
      raise ValueError(f"config.consistency.weighting must be one of {losses.WEIGHTINGS}, "
                       f"got {c.weighting!r}")
    if config.sample.sampler != "consistency":
      raise ValueError(f"config.sample.sampler must be 'consistency', got {config.sample.sampler!r}")
    if not (isinstance(config.sample.num_steps, int) and config.sample.num_steps >= 1):
      raise ValueError(f"config.sample.num_steps must be an integer >= 1, "
                       f"got {config.sample.num_steps!r}")
    sigmas = tuple(config.sample.get("sigmas", ()))
    if sigmas and (any(not 0 < s <= c.sigma_max for s in sigmas)
                   or any(a <= b for a, b in zip(sigmas, sigmas[1:]))):
      raise ValueError(f"config.sample.sigmas must be decreasing levels in (0, sigma_max], "
                       f"got {sigmas}")
    if config.model.get("num_classes", 0) and c.mode == "cd":
      raise ValueError("config.model.num_classes > 0 (class-conditional) is supported for "
                       "config.consistency.mode 'ict' and 'ct', not 'cd'")
    if not config.sample.get("guidance_scale", 1.0) >= 0:
      raise ValueError(f"config.sample.guidance_scale must be >= 0, "
                       f"got {config.sample.guidance_scale!r}")

  def __init__(self, config):
    self.config = config
    c = config.consistency
    self.mode = c.mode
    data = make_dataset(config.data)
    self.data_shape = tuple(data.shape)
    self.dim = math.prod(self.data_shape)
    self.grid = dict(sigma_min=c.sigma_min, sigma_max=c.sigma_max, rho=c.rho)
    self.max_points = c.num_points if self.mode == "cd" else c.s1 + 1
    networks.check_model_config(config.model, self.data_shape, family="consistency")
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
    params = {"online": online, "counter": {"step": jnp.zeros((), jnp.float32)}}
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
  def loss(self, params, batch, key):
    c, m = self.config.consistency, self.config.model
    batch, y, dropout_key = networks.training_inputs(m, batch, key, self.num_classes)
    f_online = self.consistency_fn(params["online"], y, dropout_key)
    f_target = (f_online if self.mode == "ict"
                else self.consistency_fn(params["target"], y, dropout_key))
    step = params["counter"]["step"]
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
    from experiments import trainer  # the trainer imports families: import at use
    return [trainer.Phase("online", self.loss, group="online")]

  def after_step(self, params, step):
    """Counter <- step + 1; target <- mu(k) target + (1 - mu(k)) online (ct, cd)."""
    params = {**params, "counter": {"step": jnp.asarray(step + 1, jnp.float32)}}
    if "target" in params:
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

  def sample(self, params, key, n: int, *, sampler: str | None = None,
             num_steps: int | None = None, sigmas=None, labels=None,
             guidance_scale: float | None = None):
    """CM Algorithm 1 from z ~ N(0, I) at tau_0 = sigma_max; returns (x0, {"nfe": num_steps}).

    Conditional models: `labels` (n,) (default 0, 1, ..., K-1, 0, ...) and the
    guidance scale w (default config.sample.guidance_scale).
    """
    w = 1.0
    if self.conditional:
      labels = networks.default_labels(n, self.num_classes) if labels is None else labels
      labels = jnp.asarray(labels, jnp.int32)
      w = float(self.config.sample.get("guidance_scale", 1.0) if guidance_scale is None
                else guidance_scale)
      if w < 0:
        raise ValueError(f"guidance_scale must be >= 0, got {w}")
    elif labels is not None or guidance_scale is not None:
      raise ValueError("labels / guidance_scale need a class-conditional model "
                       "(config.model.num_classes > 0)")
    if sampler not in (None, "consistency"):
      raise ValueError(f"sampler must be 'consistency' for the consistency family, got {sampler!r}")
    num_steps = num_steps or self.config.sample.num_steps
    sigmas = self.sample_sigmas(num_steps) if sigmas is None else jnp.asarray(sigmas, jnp.float32)
    if sigmas.shape != (num_steps,):
      raise ValueError(f"sigmas must have shape ({num_steps},), got {sigmas.shape}")
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
      x, _ = self.sample(params, jax.random.fold_in(k_sample, steps), n, num_steps=steps)
      w2 = float(w2_fn(x.reshape(n, -1), ref))
      out[f"w2_{steps}step"] = w2
      out[f"w2_ratio_{steps}step"] = w2 / out["w2_noise_floor"]
    return out
