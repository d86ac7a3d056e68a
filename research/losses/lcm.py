"""Latent consistency distillation (LCD; Luo et al. 2023, "Latent Consistency Models", Alg. 1).

Time convention (research/diffusion/schedules.py): continuous t in [0, 1], t = 1 is
noise, x_t = alpha(t) x0 + sigma(t) eps. LCD needs a DISCRETE VP schedule (DDPM
index n in [0, T - 1], t_n = (n + 1)/T, the network's time input
schedule.model_time(t_n) = n): the boundary scalings of research/diffusion/lcm.py
are functions of n.

Models are plain callables of (x, t, w) with t of shape (batch,) and w the
per-example guidance scale (batch,) in LCM's convention:

    teacher_fn(x, t, w) -> the teacher's guided prediction (type `prediction`),
        eps_w = (1 + w) eps(x, t, y) - w eps(x, t, null)    (`guided_teacher`);
        this is classifier-free guidance with Stable Diffusion's / our scale s = 1 + w
        (out = out_null + s (out_y - out_null)), so w = 0 is the plain conditional model;
    student_fn, target_fn (x, t, w) -> a prediction of the same type (the student is
        initialised from the teacher, so it predicts what the teacher predicts).

The consistency function of a prediction network F (LCM sec. 4.2):

    f(x, t, w) = c_skip(n) x + c_out(n) x0_pred(F(x, t, w)),    n = T t - 1,

(c_skip, c_out) = research.diffusion.lcm.boundary_scalings(n, sigma_data, timestep_scaling),
so f(x, t_0) = x exactly at n = 0.

One loss term per example (LCM Algorithm 1 with DDIM as the ODE solver Psi):
with skipping step k (DDPM indices; LCM uses k = 20 with T = 1000) the start
indices are the grid n_j = (j + 1) k - 1, j = 0 .. T//k - 1 (LCM's / diffusers'
DDIM timesteps of original_inference_steps = T // k: 19, 39, ..., 999 for k = 20);
draw j uniformly, the target index m = max(n_j - k, 0), w ~ U[w_min, w_max] and
eps ~ N(0, I), then

    x_hi  = alpha(t_{n_j}) x0 + sigma(t_{n_j}) eps
    x_lo  = alpha(t_m) x0_w + sigma(t_m) eps_w      (one DDIM step, eta = 0, of the guided
                                                     teacher from n_j to m; stop_gradient)
    term  = d(f_theta(x_hi, t_{n_j}, w), stop_gradient(f_theta-(x_lo, t_m, w)))

with theta- the EMA target network (the caller's target_fn) and d the squared L2
distance or pseudo-Huber (research.diffusion.consistency.pseudo_huber). The loss is
the batch mean. Example i draws (j, w, eps) from fold_in(key, i), so its noise does
not depend on the batch size. A network with dropout: close ONE dropout key into
student_fn and target_fn (as CM does); the teacher should have none.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from research.diffusion import consistency as cm
from research.diffusion import lcm
from research.diffusion import parameterization

__all__ = ["DISTANCES", "CLIP_MODES", "PREDICTIONS", "skipping_grid", "index_time",
           "consistency_fn", "guided_teacher", "ddim_step", "lcd_loss"]

DISTANCES = ("l2", "pseudo_huber")
CLIP_MODES = ("none", "static")
PREDICTIONS = ("eps", "x0", "v")


def _choice(name, value, valid):
  if value not in valid:
    raise ValueError(f"unknown {name}={value!r}; valid: {list(valid)}")


def _check_discrete(schedule):
  if not getattr(schedule, "is_discrete", False):
    raise ValueError(f"schedule must be a discrete VP schedule (schedules.discrete_vp: LCM's "
                     f"boundary scalings are functions of the DDPM index), got kind="
                     f"{getattr(schedule, 'kind', schedule)!r}")


def skipping_grid(num_train_steps: int, skip: int) -> np.ndarray:
  """The start indices n_j = (j + 1) k - 1, j = 0 .. T//k - 1 (int32; LCM's DDIM timesteps).

  ValueError unless 1 <= skip <= num_train_steps.
  """
  if isinstance(skip, bool) or not isinstance(skip, (int, np.integer)) or skip < 1:
    raise ValueError(f"skip (the skipping step k) must be an integer >= 1, got skip={skip!r}")
  if skip > num_train_steps:
    raise ValueError(f"skip={skip} must be <= num_train_steps={num_train_steps}")
  return (np.arange(1, num_train_steps // skip + 1, dtype=np.int32) * skip - 1)


def index_time(n, num_train_steps: int):
  """Continuous time t_n = (n + 1)/T of DDPM index n (float32; model_time(t_n) = n)."""
  return (jnp.asarray(n, jnp.float32) + 1.0) / jnp.float32(num_train_steps)


def _bcast(c, x):
  return jnp.reshape(c, jnp.shape(c) + (1,) * (x.ndim - jnp.ndim(c)))


def _x0(pred, x, t, schedule, prediction, clip_x0):
  alpha, sigma = _bcast(schedule.alpha(t), x), _bcast(schedule.sigma(t), x)
  x0 = parameterization.to_x0(pred, x, alpha, sigma, prediction)
  return jnp.clip(x0, -1.0, 1.0) if clip_x0 == "static" else x0


def consistency_fn(model_fn, schedule, prediction="eps", *, sigma_data=lcm.SIGMA_DATA,
                   timestep_scaling=lcm.TIMESTEP_SCALING, clip_x0="none"):
  """f(x, t, w) = c_skip(n) x + c_out(n) x0_pred(model_fn(x, t, w)), n = T t - 1 (LCM sec. 4.2).

  model_fn(x, t, w) -> a `prediction` ("eps", "x0", "v"); clip_x0 "static" clips x0_pred
  to [-1, 1] (pixel data in [-1, 1]). f(x, t_0) = x exactly (c_skip(0) = 1, c_out(0) = 0).
  """
  _check_discrete(schedule)
  _choice("prediction", prediction, PREDICTIONS)
  _choice("clip_x0", clip_x0, CLIP_MODES)
  lcm.boundary_scalings(0.0, sigma_data=sigma_data, timestep_scaling=timestep_scaling)  # checks

  def f(x, t, w):
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
    c_skip, c_out = lcm.boundary_scalings(schedule.model_time(t), sigma_data=sigma_data,
                                          timestep_scaling=timestep_scaling)
    x0 = _x0(model_fn(x, t, w), x, t, schedule, prediction, clip_x0)
    return _bcast(c_skip, x).astype(x.dtype) * x + _bcast(c_out, x).astype(x.dtype) * x0

  return f


def guided_teacher(model_fn, labels, *, null_label):
  """teacher(x, t, w) = (1 + w) out(x, t, y) - w out(x, t, null) per example (LCM's CFG).

  model_fn(x, t, y) -> prediction of a class-conditional network; labels (B,); w (B,) or ().
  In classifier-free guidance's usual form out_null + s (out_y - out_null) this is the
  scale s = 1 + w (research.diffusion.guidance with guidance_scale = 1 + w), evaluated in
  one call on the concatenated batch [x; x] with labels [y; null].
  """
  labels = jnp.asarray(labels)
  null = jnp.broadcast_to(jnp.asarray(null_label, labels.dtype), labels.shape)

  def teacher(x, t, w):
    if x.shape[0] != labels.shape[0]:
      raise ValueError(f"labels have batch size {labels.shape[0]}, x has shape {x.shape}")
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
    both = model_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                    jnp.concatenate([labels, null]))
    out_c, out_u = both[: x.shape[0]], both[x.shape[0]:]
    scale = _bcast(1.0 + jnp.broadcast_to(jnp.asarray(w, jnp.float32), x.shape[:1]), x)
    return out_u + scale.astype(out_c.dtype) * (out_c - out_u)

  return teacher


def ddim_step(pred, x, t_from, t_to, schedule, prediction="eps", clip_x0="none"):
  """One deterministic DDIM step (eta = 0) x_{t_to} = alpha_to x0_pred + sigma_to eps_pred.

  pred: the model's `prediction` at (x, t_from); t_from, t_to (batch,). eps_pred is implied
  by the (possibly clipped) x0_pred, eps = (x - alpha_from x0)/sigma_from, as research/
  diffusion/ddpm_ddim.ddim gets it from adapters.predict_x0_eps (the same without clipping).
  """
  alpha, sigma = _bcast(schedule.alpha(t_from), x), _bcast(schedule.sigma(t_from), x)
  x0 = parameterization.to_x0(pred, x, alpha, sigma, prediction)
  eps = parameterization.to_eps(pred, x, alpha, sigma, prediction)
  if clip_x0 == "static":
    x0 = jnp.clip(x0, -1.0, 1.0)
    eps = (x - alpha * x0) / sigma
  alpha_to, sigma_to = _bcast(schedule.alpha(t_to), x), _bcast(schedule.sigma(t_to), x)
  return (alpha_to * x0 + sigma_to * eps).astype(x.dtype)


def _check_w_range(w_min, w_max):
  for name, v in (("w_min", w_min), ("w_max", w_max)):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) \
        or not math.isfinite(v) or v < 0:
      raise ValueError(f"{name} must be a finite number >= 0, got {name}={v!r}")
  if w_min > w_max:
    raise ValueError(f"w_min must be <= w_max, got w_min={w_min!r}, w_max={w_max!r}")


def lcd_loss(student_fn, target_fn, teacher_fn, key, x0, schedule, *, skip=20, w_min=0.0,
             w_max=0.0, prediction="eps", distance="l2", huber_c=None, clip_x0="none",
             sigma_data=lcm.SIGMA_DATA, timestep_scaling=lcm.TIMESTEP_SCALING):
  """The LCD loss E d(f_theta(x_{n+k}, n + k, w), sg(f_theta-(Psi(x_{n+k}), n, w))) (module doc).

  Args:
    student_fn: F_theta(x, t, w) -> prediction; gradients flow through it.
    target_fn: F_theta-(x, t, w) (the EMA target); its consistency output is stop_gradient.
    teacher_fn: the guided teacher (x, t, w) -> prediction (`guided_teacher`, or any model
      that ignores w); called under stop_gradient.
    key: PRNG key; the loss is a deterministic function of it.
    x0: data batch (B, ...) (images or latents).
    schedule: a discrete VP schedule (schedules.discrete_vp) with T = num_train_steps.
    skip: the skipping step k >= 1 (DDPM indices; start indices (j + 1) k - 1).
    w_min, w_max: the guidance range (LCM's w; 0 <= w_min <= w_max), w ~ U[w_min, w_max].
    prediction: what student, target and teacher predict ("eps", "x0" or "v").
    distance: "l2" (squared L2 over an example) or "pseudo_huber".
    huber_c: pseudo-Huber c (default 0.00054 sqrt(dim), research.diffusion.consistency).
    clip_x0: "none" or "static" (x0_pred clipped to [-1, 1] in f and in the DDIM step).
    sigma_data, timestep_scaling: the boundary scalings (LCM: 0.5, 10).

  Returns:
    (loss, metrics) with metrics distance (mean d), w (mean), t_hi (mean start time),
    boundary (fraction of terms whose target index is 0).
  """
  _check_discrete(schedule)
  num_train_steps = int(schedule.num_train_steps)
  starts = jnp.asarray(skipping_grid(num_train_steps, skip))
  _check_w_range(w_min, w_max)
  _choice("distance", distance, DISTANCES)
  _choice("prediction", prediction, PREDICTIONS)
  _choice("clip_x0", clip_x0, CLIP_MODES)
  if huber_c is not None and not isinstance(huber_c, jax.core.Tracer) and not huber_c > 0:
    raise ValueError(f"huber_c must be > 0 (None: 0.00054 sqrt(dim)), got huber_c={huber_c!r}")
  x0 = jnp.asarray(x0)
  if not jnp.issubdtype(x0.dtype, jnp.floating):
    x0 = x0.astype(jnp.float32)
  batch = x0.shape[0]
  scalings = dict(sigma_data=sigma_data, timestep_scaling=timestep_scaling)
  f_student = consistency_fn(student_fn, schedule, prediction, clip_x0=clip_x0, **scalings)
  f_target = consistency_fn(target_fn, schedule, prediction, clip_x0=clip_x0, **scalings)

  def draw(i):
    k_index, k_w, k_noise = jax.random.split(jax.random.fold_in(key, i), 3)
    j = jax.random.randint(k_index, (), 0, starts.shape[0])
    w = jax.random.uniform(k_w, (), jnp.float32, w_min, w_max)
    return starts[j], w, jax.random.normal(k_noise, x0.shape[1:], x0.dtype)

  n_hi, w, eps = jax.vmap(draw)(jnp.arange(batch))
  n_lo = jnp.maximum(n_hi - skip, 0)
  t_hi, t_lo = index_time(n_hi, num_train_steps), index_time(n_lo, num_train_steps)
  x_hi = (_bcast(schedule.alpha(t_hi), x0).astype(x0.dtype) * x0
          + _bcast(schedule.sigma(t_hi), x0).astype(x0.dtype) * eps)
  teacher_pred = jax.lax.stop_gradient(teacher_fn(x_hi, t_hi, w))
  x_lo = jax.lax.stop_gradient(ddim_step(teacher_pred, x_hi, t_hi, t_lo, schedule, prediction,
                                         clip_x0))
  pred = f_student(x_hi, t_hi, w)
  target = jax.lax.stop_gradient(f_target(x_lo, t_lo, w))
  if distance == "l2":
    d = jnp.sum(jnp.reshape((pred - target) ** 2, (batch, -1)), axis=-1)
  else:
    c = cm.pseudo_huber_c(math.prod(x0.shape[1:])) if huber_c is None else huber_c
    d = cm.pseudo_huber(pred, target, c)
  metrics = {"distance": jnp.mean(d), "w": jnp.mean(w), "t_hi": jnp.mean(t_hi),
             "boundary": jnp.mean((n_lo == 0).astype(jnp.float32))}
  return jnp.mean(d), metrics
