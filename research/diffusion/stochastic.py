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
is `final_step_to_zero`. Both take the StepGrid of research/diffusion/grid.py
(spacing, t_end, timesteps= or grid=): langevin its N noise levels (a grid with
the final step to clean data, which only the denoising step uses), pc N + 1 times
ending at t_end (timesteps= gives all N + 1). With final_step_to_zero=False the
result is x at t_end = schedule.t_min in the schedule's scale (noise of scale
sigma(t_end) remains).

Noise: every Gaussian draw has its own index n and uses
`contract.per_example_normal(key, n, x)`, so results do not depend on the batch
size. Each sampler is one `lax.scan` (pc nests a scan over corrector steps):
compile time does not depend on num_steps.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from research import registry
from research.diffusion import adapters
from research.diffusion import grid as grid_lib
from research.diffusion.contract import check_x, per_example_normal, register

__all__ = ["langevin", "pc", "langevin_nfe", "pc_nfe", "PREDICTORS",
           "sde_coefficients"]

PREDICTORS = ("reverse_diffusion", "euler_maruyama")
_OPTIONS = (adapters.PREDICTION,) + grid_lib.grid_options(exclude=("rho",))
FINAL_DENOISE = registry.flag("final_step_to_zero", True,
                              "end with Tweedie's denoising step (one more evaluation)")


def _check_key(key, name):
  if key is None:
    raise ValueError(f"key must be a PRNG key: {name} is stochastic, got key=None")


def _eps_at(model_fn, x, t, alpha, sigma, prediction):
  return adapters.predict(model_fn, x, t, alpha, sigma, prediction, "eps")


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
def langevin_nfe(num_steps, *, n_inner=10, final_step_to_zero=True, **options):
  """langevin: num_steps * n_inner (+ 1 for the final denoising step)."""
  del options
  n = grid_lib.check_num_steps(num_steps)
  return n * registry.check_int("n_inner", n_inner, minimum=1) + int(bool(final_step_to_zero))


@register("langevin", nfe=langevin_nfe, stochastic=True,
          grid=grid_lib.GridRule("logsnr_uniform", t_end="t_min", final=True),
          options=tuple(o if o.name != "final_step_to_zero" else FINAL_DENOISE for o in _OPTIONS)
          + (registry.integer("n_inner", 10, minimum=1, doc="Langevin steps per noise level"),
             registry.real("step_lr", None, low=0.0, low_open=True,
                           doc="step size at the smallest level (None: 0.2 s_min^2)")))
def langevin(key, model_fn, x_T, schedule, *, num_steps, grid, prediction, final_step_to_zero,
             n_inner, step_lr):
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
  at s_min = 0.01; accuracy on toy data: docs/samplers.md).
  NFE = N n_inner (+ 1 for the final denoising step).
  """
  _check_key(key, "langevin")
  n = num_steps
  x_T = check_x(x_T)
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
    z = per_example_normal(key, i, y)
    return y + eps_i * score + jnp.sqrt(2.0 * eps_i) * z, None

  y = x_T / grid.alpha[0]
  y, _ = jax.lax.scan(step, y, steps)
  if final_step_to_zero:
    eps = _eps_at(model_fn, alpha[-1] * y, t[-1], alpha[-1], sigma[-1], prediction)
    return y - s_min * eps                                  # D(y; s) = y + s^2 score
  return alpha[-1] * y


# -----------------------------------------------------------------------------
# Predictor-corrector (score_sde).
# -----------------------------------------------------------------------------
def pc_nfe(num_steps, *, corrector_steps=1, final_step_to_zero=True, **options):
  """pc: num_steps (1 + corrector_steps) (+ 1 for the final denoising step)."""
  del options
  n = grid_lib.check_num_steps(num_steps)
  c = registry.check_int("corrector_steps", corrector_steps, minimum=0)
  return n * (1 + c) + int(bool(final_step_to_zero))


@register("pc", nfe=pc_nfe, stochastic=True,
          grid=grid_lib.GridRule("time_uniform", t_end="t_min", final=False),
          options=tuple(o if o.name != "final_step_to_zero" else FINAL_DENOISE for o in _OPTIONS)
          + (registry.choice("predictor", "reverse_diffusion", PREDICTORS, "predictor step"),
             registry.integer("corrector_steps", 1, minimum=0, doc="Langevin corrector steps"),
             registry.real("snr", 0.16, low=0.0, doc="corrector signal-to-noise ratio"),
             registry.choice("snr_norm", "batch", ("batch", "example"),
                             "norms of the corrector step: batch means or per example")))
def pc(key, model_fn, x_T, schedule, *, num_steps, grid, prediction, final_step_to_zero,
       predictor, corrector_steps, snr, snr_norm):
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
  near-zero ||score|| at a mode centre makes the step explode (measured in
  docs/samplers.md).
  NFE = N (1 + corrector_steps) (+ 1 for the final step).
  """
  _check_key(key, "pc")
  n = num_steps
  x_T = check_x(x_T)
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
    z = per_example_normal(key, i * draws + j, x)
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
    z = per_example_normal(key, i * draws + corrector_steps, x)
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
