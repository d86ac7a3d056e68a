"""Latent consistency models (LCM, Luo et al. 2023) distilled from a trained diffusion run.

Time convention: the teacher's, continuous t in [0, 1], t = 1 noise, on a DISCRETE VP
schedule (DDPM index n = T t - 1; research/diffusion/schedules.py), which LCM's boundary
scalings c_skip(n), c_out(n) (research/diffusion/lcm.py) need.

config.lcm.teacher_workdir names a trained diffusion workdir (discrete VP schedule,
eps / x0 / v prediction, class-conditional or not), restored through
experiments.families.teacher (experiments.run.load; its EMA parameters). The student
trains on the SAME data as the teacher (pixels or latents: config.data must equal the
teacher's, configs/lcm_digits.py copies it) with the teacher's network plus LCM's
guidance-scale embedding (config.model.guidance_embed_dim > 0, research/nets/unet.py)
and is initialised from the teacher's weights with the new projection at zero, so at
step 0 the student's prediction is the teacher's at every w.

Training (research.losses.lcm.lcd_loss, LCM Algorithm 1): skipping step k =
config.lcm.skip on the grid n_j = (j + 1) k - 1 (original_inference_steps = T // k),
w ~ U[w_min, w_max] per example, one DDIM step of the teacher's classifier-free-guided
prediction eps_w = (1 + w) eps(y) - w eps(null) from n_j to n_j - k, the EMA target's
consistency output there under stop_gradient, distance l2 or pseudo-Huber.
Parameter groups {"online" (trained), "target" (EMA, after_step: target <- mu target +
(1 - mu) online, mu = config.lcm.mu)}; labels are dropped to the null class with the
teacher's config.model.label_dropout, so the student also learns the unconditional model.

Guidance convention: LCM's w is the embedding input and the teacher's extrapolation
(1 + w) eps(y) - w eps(null); Stable Diffusion's / this repository's guidance scale
s (SampleRequest.guidance_scale, config.sample.guidance_scale, `--guidance_scale`) is
s = w + 1, as in diffusers' LatentConsistencyModelPipeline (w = guidance_scale - 1).
The student samples at w = s - 1, which must lie in the distilled range [w_min, w_max].
Sampling is ONE network pass per step (the guidance is an input, no CFG doubling).

Sampling: only the `lcm` sampler of research/diffusion (model_fn(x, t) -> eps; options
original_inference_steps and timestep_scaling, which the family sets from the
training config: T // skip and config.lcm.timestep_scaling); NFE = num_steps
(1, 2, 4, 8 steps are LCM's). Samples are what the teacher's data are (latents of a
latent teacher; decoding to images happens outside the families).
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp

from experiments import validation as check
from experiments.data import dataset_info
from experiments.families import networks
from experiments.families import teacher as teacher_lib
from experiments.families.protocol import (NO_PROMPT, Phase, SampleRequest, as_request,
                                           check_conditioning, guidance_for, labels_for, refuse,
                                           refuse_given, request_options, sampler_options,
                                           sampler_spec)
from research.diffusion import adapters, samplers
from research.losses import lcm as lcm_loss

SAMPLER = "lcm"
# The diffusion family's discrete schedules (experiments/families/diffusion.py).
DISCRETE_SCHEDULES = ("linear", "scaled_linear", "cosine")
# Model fields that are the student's own (everything else must equal the teacher's).
STUDENT_MODEL_FIELDS = ("guidance_embed_dim",)


def _fixed_options(spec) -> dict:
  """The lcm sampler's options the training fixes (only those the registered sampler has)."""
  why = ("is fixed by the distillation (config.lcm.skip gives original_inference_steps = "
         "T // skip; config.lcm.timestep_scaling; the prediction is converted by the family)")
  return {k: why for k in ("original_inference_steps", "timestep_scaling", "prediction")
          if k in spec.options}


def _plain(section) -> dict:
  """A config section as JSON values (tuples -> lists), as config.json stores it."""
  return json.loads(json.dumps(section.to_dict()))


def _teacher_checks(config) -> None:
  """The teacher's config.json against config.lcm / config.data / config.model (no compile)."""
  c = config.lcm
  field = "config.lcm.teacher_workdir"
  t = teacher_lib.teacher_config(c.teacher_workdir, field)
  if t.get("family") != "diffusion":
    raise ValueError(f"{field}={c.teacher_workdir!r} holds a {t.get('family')!r} run: the "
                     f"teacher must be a diffusion model")
  d = t.diffusion
  if d.schedule not in DISCRETE_SCHEDULES:
    raise ValueError(f"{field}={c.teacher_workdir!r} has the continuous schedule "
                     f"{d.schedule!r}: LCM needs a discrete VP schedule {DISCRETE_SCHEDULES} "
                     f"(its boundary scalings are functions of the DDPM index)")
  if d.prediction not in lcm_loss.PREDICTIONS:
    raise ValueError(f"{field}={c.teacher_workdir!r} predicts {d.prediction!r}; LCM "
                     f"distils eps / x0 / v teachers {lcm_loss.PREDICTIONS}")
  if d.num_train_steps % c.skip:
    raise ValueError(f"config.lcm.skip={c.skip} must divide the teacher's num_train_steps "
                     f"T = {d.num_train_steps} (the lcm sampler's grid has step T // (T // skip))")
  if _plain(config.data) != _plain(t.data):
    raise ValueError(f"config.data {_plain(config.data)} differs from the teacher's "
                     f"{_plain(t.data)} ({field}={c.teacher_workdir!r}): the student trains "
                     f"on the teacher's data (configs/lcm_digits.py copies it)")
  student = {k: v for k, v in _plain(config.model).items() if k not in STUDENT_MODEL_FIELDS}
  teacher = {k: v for k, v in _plain(t.model).items() if k not in STUDENT_MODEL_FIELDS}
  if student != teacher:
    differ = sorted(k for k in set(student) | set(teacher) if student.get(k) != teacher.get(k))
    raise ValueError(f"config.model differs from the teacher's in {differ} ({field}="
                     f"{c.teacher_workdir!r}): the student is the teacher's network (plus "
                     f"config.model.guidance_embed_dim), initialised from its weights")
  if not t.model.get("num_classes", 0) and config.model.get("guidance_embed_dim", 0):
    raise ValueError(f"config.model.guidance_embed_dim={config.model.guidance_embed_dim} needs "
                     f"a class-conditional teacher: {field}={c.teacher_workdir!r} is "
                     f"unconditional (no guidance to distil); set it to 0")


def init_from_teacher(student_params, teacher_params, path=()):
  """The student's tree with every leaf the teacher has replaced by the teacher's value.

  Leaves only the student has (the guidance projection) keep their initial value; a
  teacher leaf the student lacks, or one of another shape, is a ValueError.
  """
  if not isinstance(student_params, dict):
    if tuple(student_params.shape) != tuple(teacher_params.shape):
      raise ValueError(f"teacher parameter {'/'.join(path)} has shape "
                       f"{tuple(teacher_params.shape)}, the student's "
                       f"{tuple(student_params.shape)}")
    return jnp.asarray(teacher_params, student_params.dtype)
  extra = sorted(set(teacher_params) - set(student_params))
  if extra:
    raise ValueError(f"teacher parameters {['/'.join(path + (str(k),)) for k in extra]} have "
                     f"no place in the student network")
  return {k: (init_from_teacher(v, teacher_params[k], path + (str(k),))
              if k in teacher_params else v) for k, v in student_params.items()}


class LCM:
  """LCM family: init (from the teacher) / phases / after_step / sample over plain pytrees."""
  name = "lcm"

  @staticmethod
  def check_config(config) -> None:
    networks.check_model_config(config.model, dataset_info(config.data).shape, family="lcm")
    c = config.lcm
    check.positive_int(c.skip, "config.lcm.skip")
    for name in ("w_min", "w_max"):
      check.non_negative_number(c[name], f"config.lcm.{name}")
    if c.w_min > c.w_max:
      raise ValueError(f"config.lcm.w_min/w_max must satisfy 0 <= w_min <= w_max, "
                       f"got {c.w_min!r}, {c.w_max!r}")
    check.choice(c.distance, lcm_loss.DISTANCES, "config.lcm.distance")
    check.non_negative_number(c.huber_c, "config.lcm.huber_c")   # 0: 0.00054 sqrt(dim)
    check.number_in(c.mu, "config.lcm.mu", 0.0, 1.0)
    check.positive_number(c.timestep_scaling, "config.lcm.timestep_scaling")
    check.positive_number(c.sigma_data, "config.lcm.sigma_data")
    check.choice(c.clip_x0, lcm_loss.CLIP_MODES, "config.lcm.clip_x0")
    if c.clip_x0 != "none" and config.data.get("autoencoder_workdir", ""):
      raise ValueError(f"config.lcm.clip_x0={c.clip_x0!r} clips x0 to [-1, 1]: latents "
                       f"(config.data.autoencoder_workdir) are not in a fixed range; use 'none'")
    if c.clip_x0 != "none" and config.data.get("pixel_range", "unit") != "symmetric":
      raise ValueError(f"config.lcm.clip_x0={c.clip_x0!r} clips x0 to [-1, 1]: it needs data "
                       f"in [-1, 1] (config.data.pixel_range='symmetric')")
    s = config.sample
    check.choice(s.sampler, (SAMPLER,), "config.sample.sampler")
    check.positive_int(s.num_steps, "config.sample.num_steps")
    s_scale = check.non_negative_number(s.get("guidance_scale", 1.0),
                                        "config.sample.guidance_scale")
    if config.model.get("num_classes", 0) and not c.w_min <= s_scale - 1.0 <= c.w_max:
      raise ValueError(f"config.sample.guidance_scale={s_scale} is s = w + 1 with w outside the "
                       f"distilled range [w_min, w_max] = [{c.w_min}, {c.w_max}]")
    if SAMPLER in samplers.NAMES:
      spec = samplers.spec(SAMPLER)
      sampler_options(spec, s.get("options", ""), "config.sample.options", _fixed_options(spec))
    _teacher_checks(config)

  def __init__(self, config, dataset):
    self.config = config
    c = config.lcm
    self.data_shape = tuple(dataset.shape)
    self.dim = math.prod(self.data_shape)
    teacher = teacher_lib.load_diffusion_teacher(c.teacher_workdir, "config.lcm.teacher_workdir")
    self.teacher = teacher
    self.schedule = teacher.family.schedule
    self.prediction = teacher.family.prediction
    self.num_train_steps = int(self.schedule.num_train_steps)
    self.original_inference_steps = self.num_train_steps // c.skip
    self.net = networks.make_network(config.model, self.data_shape, time_scale=1.0)
    self.num_classes = self.net.num_classes
    self.conditional = self.num_classes > 0
    self.guided = bool(config.model.get("guidance_embed_dim", 0))
    self._loss_options = dict(
        skip=c.skip, w_min=float(c.w_min), w_max=float(c.w_max), prediction=self.prediction,
        distance=c.distance, huber_c=float(c.huber_c) or None, clip_x0=c.clip_x0,
        sigma_data=float(c.sigma_data), timestep_scaling=float(c.timestep_scaling))

  # -- networks -----------------------------------------------------------------------
  def init(self, key: jax.Array):
    """The teacher's EMA weights in the student's tree (guidance projection at zero)."""
    online = init_from_teacher(self.net.init(key), jax.device_get(self.teacher.params))
    return {"online": online, "target": jax.tree.map(jnp.copy, online)}

  def model_fn(self, net_params, y=None, dropout_key=None):
    """The student's prediction (the teacher's type) F(x, t, w); t continuous (batch,)."""
    schedule, guided = self.schedule, self.guided

    def fn(x, t, w):
      t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
      return self.net.apply(net_params, x, schedule.model_time(t), y, dropout_key=dropout_key,
                            w=w if guided else None)

    return fn

  def teacher_fn(self, y=None):
    """The teacher's guided prediction (x, t, w) -> (1 + w) out(y) - w out(null) (or out(x, t))."""
    tf, tp = self.teacher.family, self.teacher.params
    if not self.conditional:
      return lambda x, t, w: tf.model_fn(tp)(x, t)
    return lcm_loss.guided_teacher(lambda x, t, labels: tf.model_fn(tp, labels)(x, t), y,
                                   null_label=self.num_classes)

  # -- training -----------------------------------------------------------------------
  def loss(self, params, batch, key, step):
    del step  # LCD's objective and target decay do not change over training
    batch, y, dropout_key = networks.training_inputs(self.config.model, batch, key,
                                                     self.num_classes)
    return lcm_loss.lcd_loss(
        self.model_fn(params["online"], y, dropout_key),
        self.model_fn(params["target"], y, dropout_key), self.teacher_fn(y),
        jax.random.fold_in(key, 3), batch, self.schedule, **self._loss_options)

  def phases(self):
    return [Phase("online", self.loss, group="online")]

  def after_step(self, params, step):
    """target <- mu target + (1 - mu) online (LCM's EMA target, mu = config.lcm.mu)."""
    del step
    mu = jnp.float32(self.config.lcm.mu)
    params = dict(params)
    online = jax.lax.stop_gradient(params["online"])
    params["target"] = jax.tree.map(lambda t, o: mu * t + (1.0 - mu) * o, params["target"],
                                    online)
    return params

  # -- sampling -----------------------------------------------------------------------
  def _resolve(self, request: SampleRequest, n=None):
    """(spec, num_steps, options, w) of a request, every field checked (nothing compiled)."""
    if request.sampler is not None and request.sampler != SAMPLER:
      refuse(self.name, "sampler", request.sampler, f"its sampler is {SAMPLER!r}")
    refuse_given(self.name, request, {
        "clip_x0": "x0 clipping is fixed by the distillation (config.lcm.clip_x0)", **NO_PROMPT})
    check_conditioning(self.name, request, self.num_classes, n)
    spec = sampler_spec(samplers.spec, SAMPLER, "SampleRequest.sampler")
    options = request_options(spec, request, self.config, _fixed_options(spec))
    num_steps = request.num_steps or self.config.sample.num_steps
    w = 0.0
    if self.conditional:
      s = guidance_for(request, self.config)
      w = s - 1.0
      c = self.config.lcm
      if not c.w_min - 1e-9 <= w <= c.w_max + 1e-9:
        field = ("SampleRequest.guidance_scale" if request.guidance_scale is not None
                 else "config.sample.guidance_scale")
        raise ValueError(f"{field}={s} is s = w + 1 with LCM's w = {w:g} outside the distilled "
                         f"range [w_min, w_max] = [{c.w_min}, {c.w_max}] (s in "
                         f"[{1 + c.w_min}, {1 + c.w_max}])")
    return spec, num_steps, options, w

  def check_request(self, request: SampleRequest | None, n: int | None = None) -> None:
    """Every refusal of sample(): sampler, options, clip_x0, labels, guidance (and its range)."""
    self._resolve(as_request(request), n)

  def _sample_impl(self, params, key, n, num_steps, options, labels, w):
    spec = samplers.spec(SAMPLER)
    k_prior, k_sampler = jax.random.split(key)
    t_max = jnp.float32(self.schedule.t_max)
    scale = jnp.sqrt(self.schedule.alpha(t_max) ** 2 + self.schedule.sigma(t_max) ** 2)
    x_T = scale * jax.random.normal(k_prior, (n, *self.data_shape), jnp.float32)
    f = self.model_fn(params, labels)
    model_fn = lambda x, t: f(x, t, jnp.full(x.shape[:1], w, jnp.float32))  # noqa: E731
    prediction = self.prediction
    model_fn = adapters.clip_x0(model_fn, self.schedule, prediction, self.config.lcm.clip_x0)
    fixed = {"original_inference_steps": self.original_inference_steps,
             "timestep_scaling": float(self.config.lcm.timestep_scaling)}
    if "prediction" in spec.options:
      fixed["prediction"] = prediction
    else:
      model_fn = adapters.with_prediction(model_fn, self.schedule, prediction, "eps")
    fixed = {k: v for k, v in fixed.items() if k in spec.options}
    return spec.fn(k_sampler, model_fn, x_T, self.schedule, num_steps=num_steps,
                   **fixed, **dict(options))

  def sample(self, params, key, n: int, request: SampleRequest | None = None):
    """LCM multistep sampling with the trainer's EMA of "online"; returns (x, stats).

    request (None: the config's defaults): num_steps (= NFE; 1, 2, 4, 8), options of the
    lcm sampler other than those the training fixes; conditional models: labels (n,)
    (default 0, 1, ..., K-1, 0, ...) and the guidance scale s (SD's convention; the
    student's embedding input is LCM's w = s - 1, which must lie in [w_min, w_max]).
    One network pass per step: stats {"nfe": num_steps, "network_passes_per_example"}.
    """
    request = as_request(request)
    spec, num_steps, options, w = self._resolve(request, n)
    labels = labels_for(request, n, self.num_classes)
    options = tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                           for k, v in options.items()))
    x = self._jitted_sample(params["online"], key, int(n), int(num_steps), options, labels,
                            float(w))
    nfe = spec.count_nfe(num_steps, **dict(options))
    return x, {"nfe": nfe, "network_passes_per_example": nfe}

  @property
  def _jitted_sample(self):
    if not hasattr(self, "_jit_cache"):
      self._jit_cache = jax.jit(self._sample_impl,
                                static_argnames=("n", "num_steps", "options", "w"))
    return self._jit_cache
