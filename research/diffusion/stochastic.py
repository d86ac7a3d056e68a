"""Score-based stochastic samplers: annealed Langevin dynamics and predictor-corrector.

Time convention: continuous t in [0, 1], t = 1 is noise, t = 0 is clean data,
x_t = alpha(t) x0 + sigma(t) eps (research/diffusion/schedules.py). Contract:
sampler(key, model_fn, x_T, schedule, *, num_steps, prediction="eps", **options),
model_fn(x, t) with t of shape (batch,); any prediction type is converted to the
score of the noisy marginal,

    score(x, t) = grad_x log p_t(x) = -eps_hat(x, t) / sigma(t).

x_T is given in the schedule's scale at t = 1: x_T ~ N(0, I) for VP schedules,
N(0, sigma_max^2 I) for VE.

* `langevin`: annealed Langevin dynamics (Song & Ermon 2019, NCSN). It runs in
  the VE form y = x / alpha(t) with noise level s = sigma / alpha (as in
  karras.py), so for VE schedules it is exactly NCSN and for VP schedules it
  samples the same perturbed densities p(y; s) = p_data * N(0, s^2 I).
* `pc`: the predictor-corrector sampler of Song et al. 2021 ("Score-based
  generative modeling through SDEs", Algorithms 2-3) in the schedule's own
  scale: a reverse-diffusion (or Euler-Maruyama) predictor with Langevin
  corrector steps whose size follows the signal-to-noise rule of score_sde.

Both end, by default, with one denoising step to clean data (Tweedie's formula
x0 = (x + sigma^2 score) / alpha, Efron 2011; the "denoise" of Jolicoeur-Martineau
et al. 2021 and NCSNv2), which costs one extra network evaluation; the option
is `final_step_to_zero` (as for every sampler). With final_step_to_zero=False the
result is x at t_end = schedule.t_min in the schedule's scale (noise of scale
sigma(t_end) remains).

Noise: every Gaussian draw has its own index n and uses
`samplers.per_example_normal(key, n, x)`, so results do not depend on the batch
size. Each sampler is one `lax.scan` (pc nests a scan over corrector steps):
compile time does not depend on num_steps.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from research.diffusion import parameterization as param
from research.diffusion import samplers as samplers_lib

__all__ = ["langevin", "pc", "langevin_nfe", "pc_nfe", "PREDICTORS",
           "sde_coefficients"]

PREDICTORS = ("reverse_diffusion", "euler_maruyama")


def _check_int(name, value, minimum):
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{name} must be a Python int >= {minimum}, got {name}={value!r}")
  return int(value)


def _check_positive(name, value):
  if value is not None and not isinstance(value, jax.core.Tracer) and not float(value) > 0:
    raise ValueError(f"{name} must be > 0, got {name}={value!r}")


def _check_key(key, name):
  if key is None:
    raise ValueError(f"key must be a PRNG key: {name} is stochastic, got key=None")


def _check_x(x_T):
  x_T = jnp.asarray(x_T)
  if x_T.ndim < 1 or not jnp.issubdtype(x_T.dtype, jnp.floating):
    raise ValueError(f"x_T must be a float array of shape (batch, ...), got shape "
                     f"{x_T.shape} and dtype {x_T.dtype}")
  return x_T.astype(jnp.float32)


def _eps_at(model_fn, x, t, alpha, sigma, prediction):
  pred = model_fn(x, samplers_lib.batch_time(t, x))
  return param.to_eps(pred, x, alpha, sigma, prediction).astype(x.dtype)


def _per_example_norm(a):
  return jnp.sqrt(jnp.sum(jnp.reshape(a, (a.shape[0], -1)) ** 2, axis=1))


def _bcast(c, x):
  return jnp.reshape(c, c.shape + (1,) * (x.ndim - 1))


def sde_coefficients(schedule, t):
  """Drift and diffusion coefficients f(t), g(t)^2 of the forward SDE dx = f x dt + g dw.

  f = d log alpha / dt,  g^2 = d sigma^2/dt - 2 f sigma^2 = -2 sigma^2 d lambda/dt
  (Song et al. 2021; Kingma et al. 2021, VDM eq. 7). For the continuous VP
  schedule f = -beta(t)/2, g^2 = beta(t). Derivatives by autodiff of the
  schedule (piecewise constant for discrete schedules).
  """
  t = jnp.asarray(t, jnp.float32)
  flat = t.reshape(-1)
  f = jax.vmap(jax.grad(lambda u: schedule.log_alpha(u)))(flat)
  dlam = jax.vmap(jax.grad(lambda u: schedule.log_snr(u)))(flat)
  g2 = -2.0 * schedule.sigma(flat) ** 2 * dlam
  return f.reshape(t.shape), g2.reshape(t.shape)


# -----------------------------------------------------------------------------
# Annealed Langevin dynamics (NCSN).
# -----------------------------------------------------------------------------
def langevin(key, model_fn, x_T, schedule, *, num_steps, prediction="eps",
             spacing="logsnr_uniform", t_end=None, final_step_to_zero=True,
             n_inner=10, step_lr=None):
  """Annealed Langevin dynamics over a noise ladder (Song & Ermon 2019, Algorithm 1).

  For levels i = 0..N-1 (N = num_steps; s_i = sigma/alpha at t_i, from t_0 = 1
  down to t_{N-1} = t_end; the default spacing "logsnr_uniform" is NCSN's
  geometric ladder), n_inner steps each, in the VE form y = x / alpha:

      eps_i = step_lr (s_i / s_{N-1})^2,
      y <- y + eps_i score(y; s_i) + sqrt(2 eps_i) z,    score(y; s) = -eps_hat / s,

  then (final_step_to_zero) Tweedie's denoising y + s_{N-1}^2 score = D(y; s_{N-1})
  (Jolicoeur-Martineau et al. 2021; Song & Ermon 2020, NCSNv2). The per-step
  ratio eps_i / s_i^2 = step_lr / s_{N-1}^2 is the same at every level; a
  Gaussian of variance s^2 contracts by (1 - eps/s^2) per step, so it must stay
  well below 2 (and below ~0.2 for a small discretisation bias).
  step_lr=None takes NCSN's ratio, step_lr = 0.2 s_{N-1}^2 (NCSN: step_lr = 2e-5
  at s_min = 0.01; on an 8-mode 2-D ring, N = 10 levels x 10 inner steps reach
  the noise floor of W2, see tests/research/diffusion/test_stochastic.py).
  NFE = N n_inner (+ 1 for the final denoising step).
  """
  _check_key(key, "langevin")
  n = samplers_lib.check_num_steps(num_steps)
  n_inner = _check_int("n_inner", n_inner, 1)
  _check_positive("step_lr", step_lr)
  prediction = samplers_lib.check_prediction(prediction)
  x_T = _check_x(x_T)
  grid = samplers_lib.sampling_grid(schedule, n, spacing=spacing, t_end=t_end,
                                    final_step_to_zero=True)
  t = grid.t[:-1]                                           # the N levels
  s = schedule.edm_sigma(t).astype(jnp.float32)
  alpha, sigma = grid.alpha[:-1], grid.sigma[:-1]
  s_min = s[-1]
  lr = 0.2 * s_min**2 if step_lr is None else jnp.asarray(step_lr, jnp.float32)
  step_size = lr * (s / s_min) ** 2
  rep = lambda a: jnp.repeat(a, n_inner)
  steps = (jnp.arange(n * n_inner), rep(t), rep(s), rep(alpha), rep(sigma), rep(step_size))

  def step(y, inputs):
    i, t_i, s_i, a_i, sg_i, eps_i = inputs
    score = -_eps_at(model_fn, a_i * y, t_i, a_i, sg_i, prediction) / s_i
    z = samplers_lib.per_example_normal(key, i, y)
    return y + eps_i * score + jnp.sqrt(2.0 * eps_i) * z, None

  y = x_T / grid.alpha[0]
  y, _ = jax.lax.scan(step, y, steps)
  if final_step_to_zero:
    eps = _eps_at(model_fn, alpha[-1] * y, t[-1], alpha[-1], sigma[-1], prediction)
    return y - s_min * eps                                  # D(y; s) = y + s^2 score
  return alpha[-1] * y


def langevin_nfe(num_steps, *, n_inner=10, final_step_to_zero=True, **options):
  """langevin: num_steps * n_inner (+ 1 for the final denoising step)."""
  del options
  n = samplers_lib.check_num_steps(num_steps)
  return n * _check_int("n_inner", n_inner, 1) + int(bool(final_step_to_zero))


# -----------------------------------------------------------------------------
# Predictor-corrector (score_sde).
# -----------------------------------------------------------------------------
def pc(key, model_fn, x_T, schedule, *, num_steps, prediction="eps", spacing="time_uniform",
       t_end=None, final_step_to_zero=True, predictor="reverse_diffusion",
       corrector_steps=1, snr=0.16, snr_norm="batch"):
  """Predictor-corrector sampling of the reverse SDE (Song et al. 2021, Algorithms 2-5).

  On t_0 = 1 > ... > t_N = t_end (N = num_steps, default uniform in time as in
  score_sde), for i = 0..N-1: `corrector_steps` Langevin corrector steps at t_i,
      step = 2 a_i^2 (snr ||z|| / ||score(x, t_i)||)^2,
      x <- x + step score + sqrt(2 step) z,
  then one predictor step t_i -> t_{i+1}. With the forward transition from
  t_{i+1} to t_i, x_{t_i} = a_i x_{t_{i+1}} + sqrt(b_i) z, a_i = alpha_i / alpha_{i+1},
  b_i = sigma_i^2 - a_i^2 sigma_{i+1}^2 (for VP a_i^2 = 1 - beta_i, b_i = beta_i):
    "reverse_diffusion":  x <- (2 - a_i) x + b_i score + sqrt(b_i) z (score_sde's
                          ReverseDiffusionPredictor; for VE x + (s_i^2 - s_{i+1}^2) score + ...),
    "euler_maruyama":     x <- x + (f x - g^2 score) dt + g sqrt(-dt) z, dt = t_{i+1} - t_i,
                          with f, g^2 from `sde_coefficients`.
  Finally (final_step_to_zero) Tweedie's x0 = (x + sigma^2 score)/alpha at t_N.
  The corrector's a_i^2 is score_sde's alpha_i = 1 - beta_i factor (1 for VE).
  snr_norm="batch" (default) averages ||z|| and ||score|| over the batch before
  taking the ratio, exactly as score_sde does: the noise is still drawn per
  example, but the step size (hence the result) depends on the other examples.
  snr_norm="example" uses each example's own norms (batch-size invariant); it
  is only sensible in high dimension, where the norms concentrate: in 2-D a
  near-zero ||score|| at a mode centre makes the step explode (W2 7.6x the
  noise floor on an 8-mode ring, versus ~1x with "batch").
  NFE = N (1 + corrector_steps) (+ 1 for the final step).
  """
  _check_key(key, "pc")
  n = samplers_lib.check_num_steps(num_steps)
  corrector_steps = _check_int("corrector_steps", corrector_steps, 0)
  if predictor not in PREDICTORS:
    raise ValueError(f"unknown predictor={predictor!r}; valid predictors: {list(PREDICTORS)}")
  if snr_norm not in ("batch", "example"):
    raise ValueError(f"snr_norm must be 'batch' or 'example', got snr_norm={snr_norm!r}")
  if not isinstance(snr, jax.core.Tracer) and not float(snr) >= 0:
    raise ValueError(f"snr must be >= 0, got snr={snr!r}")
  prediction = samplers_lib.check_prediction(prediction)
  x_T = _check_x(x_T)
  grid = samplers_lib.sampling_grid(schedule, n, spacing=spacing, t_end=t_end,
                                    final_step_to_zero=False)
  t, alpha, sigma = grid.t, grid.alpha, grid.sigma
  a = alpha[:-1] / alpha[1:]
  b = jnp.maximum(sigma[:-1] ** 2 - a**2 * sigma[1:] ** 2, 0.0)
  f, g2 = sde_coefficients(schedule, t[:-1])
  dt = t[1:] - t[:-1]
  draws = corrector_steps + 1

  def score_at(x, t_i, a_i, s_i):
    return -_eps_at(model_fn, x, t_i, a_i, s_i, prediction) / s_i

  def corrector(x, j, i, t_i, a_i, s_i, c_i):
    score = score_at(x, t_i, a_i, s_i)
    z = samplers_lib.per_example_normal(key, i * draws + j, x)
    z_norm, score_norm = _per_example_norm(z), _per_example_norm(score)
    if snr_norm == "batch":
      z_norm, score_norm = jnp.mean(z_norm), jnp.mean(score_norm)
      ratio = jnp.full(x.shape[:1], z_norm / jnp.maximum(score_norm, 1e-20))
    else:
      ratio = z_norm / jnp.maximum(score_norm, 1e-20)
    step = _bcast(2.0 * c_i * (snr * ratio) ** 2, x)
    return x + step * score + jnp.sqrt(2.0 * step) * z

  def step(x, inputs):
    i, t_i, a_i, s_i, ai, bi, fi, g2i, dti = inputs
    x, _ = jax.lax.scan(lambda x, j: (corrector(x, j, i, t_i, a_i, s_i, ai**2), None),
                        x, jnp.arange(corrector_steps))
    score = score_at(x, t_i, a_i, s_i)
    z = samplers_lib.per_example_normal(key, i * draws + corrector_steps, x)
    if predictor == "reverse_diffusion":
      x = (2.0 - ai) * x + bi * score + jnp.sqrt(bi) * z
    else:
      x = x + (fi * x - g2i * score) * dti + jnp.sqrt(g2i * -dti) * z
    return x, None

  steps = (jnp.arange(n), t[:-1], alpha[:-1], sigma[:-1], a, b, f, g2, dt)
  x, _ = jax.lax.scan(step, x_T, steps)
  if final_step_to_zero:
    eps = _eps_at(model_fn, x, t[-1], alpha[-1], sigma[-1], prediction)
    return (x - sigma[-1] * eps) / alpha[-1]
  return x


def pc_nfe(num_steps, *, corrector_steps=1, final_step_to_zero=True, **options):
  """pc: num_steps (1 + corrector_steps) (+ 1 for the final denoising step)."""
  del options
  n = samplers_lib.check_num_steps(num_steps)
  c = _check_int("corrector_steps", corrector_steps, 0)
  return n * (1 + c) + int(bool(final_step_to_zero))
