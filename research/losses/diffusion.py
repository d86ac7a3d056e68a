"""Diffusion training losses: eps-, v-, x0-prediction and denoising score matching.

Time convention (diffusion): continuous t in [0, 1], t = 1 is noise, and
x_t = alpha(t) x0 + sigma(t) eps with a `Schedule` from
research/diffusion/schedules.py (discrete DDPM schedules are wrapped as
continuous time, t_n = (n + 1)/T). model_fn(x_t, t) receives the continuous t,
shape (B,); a network that wants the DDPM index calls schedule.model_time(t).

Per example the residual r depends on the prediction type (its "native" loss):

    eps   (Ho et al. 2020, L_simple):           r = eps_theta(x_t, t) - eps
    v     (Salimans & Ho 2022):                 r = v_theta(x_t, t) - (alpha eps - sigma x0)
    x0    (Ho et al. 2020; Karras et al. 2022): r = x0_theta(x_t, t) - x0
    score (Song & Ermon 2019, DSM with lambda(sigma) = sigma^2):
                                                r = sigma s_theta(x_t, t) + eps

and the loss is w(t) ||r||^2. Weightings are defined on the x0-space error, as
in Hang et al. 2023: w(t) ||r||^2 = W(snr) ||x0_theta - x0||^2 with snr = alpha^2/sigma^2.
Since ||r||^2 = f(snr) ||x0_theta - x0||^2 with f = snr (eps, score),
(alpha^2 + sigma^2)^2/sigma^2 = snr + 1 for VP (v), 1 (x0), the native multiplier is
w = W / f:

    "none"           w = 1 (the native MSE of the chosen prediction)
    "snr"            W = snr          (= L_simple whatever the prediction)
    "snr_plus_one"   W = snr + 1      (= the v-MSE for VP; Salimans & Ho 2022)
    "truncated_snr"  W = max(snr, 1)  (Salimans & Ho 2022)
    "min_snr"        W = min(snr, gamma), gamma = min_snr_gamma (Hang et al. 2023, "Min-SNR")
    "p2"             W = snr / (p2_k + snr)^p2_gamma (Choi et al. 2022, "Perception prioritized")

so e.g. min_snr with eps-prediction multiplies L_simple by min(snr, gamma)/snr and
with v-prediction by min(snr, gamma)/(snr + 1).

Times: t_sampler "uniform" draws the schedule's own training times -- for a
discrete schedule n ~ U{0..T-1}, t = (n + 1)/T; otherwise t ~ U(t_min, 1);
"continuous" draws t ~ U(t_min, 1) also for discrete schedules.

Reduction: squared error SUMMED over the non-batch axes of an example, then
AVERAGED over the batch. Randomness: example i draws its t and eps from
fold_in(key, i), so its noise does not depend on the batch size.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from research.diffusion import parameterization as param_lib
from research.diffusion.schedules import Schedule

__all__ = ["PREDICTIONS", "WEIGHTINGS", "T_SAMPLERS", "sample_time", "loss_weight",
           "diffusion_loss"]

PREDICTIONS = param_lib.PREDICTIONS
WEIGHTINGS = ("none", "snr", "snr_plus_one", "truncated_snr", "min_snr", "p2")
T_SAMPLERS = ("uniform", "continuous")


def sample_time(t_sampler, key, schedule: Schedule, dtype=jnp.float32):
  """One training time t for one example (shape ()).

  "uniform": n ~ U{0..T-1}, t = (n + 1)/T for discrete schedules (Ho et al. 2020),
  t ~ U(t_min, 1) for continuous ones (Song et al. 2021; Kingma et al. 2021);
  "continuous": t ~ U(t_min, 1) for every schedule.
  """
  if t_sampler not in T_SAMPLERS:
    raise ValueError(f"unknown t_sampler {t_sampler!r}; valid t_samplers: {list(T_SAMPLERS)}")
  if t_sampler == "uniform" and schedule.is_discrete:
    T = schedule.num_train_steps
    n = jax.random.randint(key, (), 0, T)
    return ((n + 1).astype(dtype) / T).astype(dtype)
  return jax.random.uniform(key, (), dtype, minval=schedule.t_min, maxval=schedule.t_max)


def loss_weight(weighting, prediction, alpha, sigma, *, min_snr_gamma=5.0, p2_k=1.0,
                p2_gamma=1.0):
  """Native-loss multiplier w = W(snr) / f(snr) of `weighting` for `prediction` (module docstring).

  W: none -> f, snr -> snr, snr_plus_one -> snr + 1, truncated_snr -> max(snr, 1)
  (Salimans & Ho 2022), min_snr -> min(snr, gamma) (Hang et al. 2023),
  p2 -> snr / (k + snr)^gamma (Choi et al. 2022); f = snr (eps, score),
  (alpha^2 + sigma^2)^2 / sigma^2 (v), 1 (x0). Elementwise in alpha, sigma.
  """
  if weighting not in WEIGHTINGS:
    raise ValueError(f"unknown weighting {weighting!r}; valid weightings: {list(WEIGHTINGS)}")
  param_lib.check_prediction(prediction)
  if weighting == "none":
    return jnp.ones_like(jnp.asarray(alpha * sigma))
  a2, s2 = alpha * alpha, sigma * sigma
  snr = a2 / s2
  if weighting == "snr":
    big_w = snr
  elif weighting == "snr_plus_one":
    big_w = snr + 1.0
  elif weighting == "truncated_snr":
    big_w = jnp.maximum(snr, 1.0)
  elif weighting == "min_snr":
    big_w = jnp.minimum(snr, min_snr_gamma)
  else:
    big_w = snr / (p2_k + snr) ** p2_gamma
  if prediction in ("eps", "score"):
    f = snr
  elif prediction == "v":
    f = (a2 + s2) ** 2 / s2
  else:
    f = jnp.ones_like(snr)
  return big_w / f


def diffusion_loss(model_fn, key, x0, schedule: Schedule, *, prediction="eps",
                   weighting="none", t_sampler="uniform", min_snr_gamma=5.0, p2_k=1.0,
                   p2_gamma=1.0):
  """Weighted denoising loss E_t,eps w(t) ||r(x_t, t)||^2 for eps / v / x0 / score prediction.

  Draws per example t ~ t_sampler and eps ~ N(0, I), forms x_t = alpha(t) x0 +
  sigma(t) eps, and regresses model_fn(x_t, t) on the target of `prediction`:
  eps (Ho et al. 2020, L_simple = E ||eps - eps_theta||^2), v = alpha eps - sigma x0
  (Salimans & Ho 2022), x0, or the score through DSM E ||sigma s_theta + eps||^2
  (Song & Ermon 2019). `weighting` rescales by an SNR weight defined on the x0
  error (module docstring; Hang et al. 2023 for "min_snr").

  Args:
    model_fn: pure callable model_fn(x, t) -> prediction of x's shape, with x
      (B, ...) and continuous t (B,) in (0, 1].
    key: PRNG key; the result is a deterministic function of it.
    x0: data batch (B, ...), float.
    schedule: a research.diffusion.schedules.Schedule.
    prediction: one of PREDICTIONS ("eps", "x0", "v", "score").
    weighting: one of WEIGHTINGS.
    t_sampler: "uniform" or "continuous" (module docstring).
    min_snr_gamma: gamma of "min_snr" (> 0; 5 in Hang et al. 2023).
    p2_k, p2_gamma: k and gamma of "p2" (Choi et al. 2022 use k = 1, gamma = 1).

  Returns:
    (loss, metrics), metrics = {"loss", "loss_per_dim", "eps_mse" (unweighted
    eps-space squared error, batch mean), "weight_mean", "t_mean"}.

  Raises ValueError naming the argument for an unknown prediction / weighting /
  t_sampler, a bad gamma, a schedule that is not a Schedule, or x0 without a
  batch axis / not float.
  """
  param_lib.check_prediction(prediction)
  if weighting not in WEIGHTINGS:
    raise ValueError(f"unknown weighting {weighting!r}; valid weightings: {list(WEIGHTINGS)}")
  if t_sampler not in T_SAMPLERS:
    raise ValueError(f"unknown t_sampler {t_sampler!r}; valid t_samplers: {list(T_SAMPLERS)}")
  if not isinstance(schedule, Schedule):
    raise ValueError(f"schedule must be a research.diffusion.schedules.Schedule, "
                     f"got {type(schedule).__name__}")
  if not min_snr_gamma > 0:
    raise ValueError(f"min_snr_gamma must be > 0, got min_snr_gamma={min_snr_gamma!r}")
  if not p2_k > 0 or not p2_gamma >= 0:
    raise ValueError(f"p2_k must be > 0 and p2_gamma >= 0, got p2_k={p2_k!r}, "
                     f"p2_gamma={p2_gamma!r}")
  x0 = jnp.asarray(x0)
  if x0.ndim < 1 or x0.shape[0] < 1:
    raise ValueError(f"x0 must have a non-empty batch axis, got shape {x0.shape}")
  if not jnp.issubdtype(x0.dtype, jnp.floating):
    raise ValueError(f"x0 must be a float array, got dtype {x0.dtype}")

  batch, example_shape = x0.shape[0], x0.shape[1:]

  def draw(i):
    k_t, k_eps = jax.random.split(jax.random.fold_in(key, i))
    return (sample_time(t_sampler, k_t, schedule, x0.dtype),
            jax.random.normal(k_eps, example_shape, x0.dtype))

  t, eps = jax.vmap(draw)(jnp.arange(batch))
  alpha, sigma = schedule.alpha(t).astype(x0.dtype), schedule.sigma(t).astype(x0.dtype)
  a = param_lib.broadcast_to_batch(alpha, x0, "alpha")
  s = param_lib.broadcast_to_batch(sigma, x0, "sigma")
  xt = a * x0 + s * eps

  pred = model_fn(xt, t)
  if pred.shape != xt.shape:
    raise ValueError(f"model_fn must return the shape of x {xt.shape}, got {pred.shape}")
  if prediction == "eps":
    residual = pred - eps
  elif prediction == "v":
    residual = pred - (a * eps - s * x0)
  elif prediction == "x0":
    residual = pred - x0
  else:
    residual = s * pred + eps

  sum_axes = tuple(range(1, x0.ndim))
  sq = jnp.sum(jnp.square(residual), axis=sum_axes)
  weight = loss_weight(weighting, prediction, alpha, sigma, min_snr_gamma=min_snr_gamma,
                       p2_k=p2_k, p2_gamma=p2_gamma)
  loss = jnp.mean(weight * sq)
  eps_pred = jax.lax.stop_gradient(param_lib.to_eps(pred, xt, alpha, sigma, prediction))
  dims = max(1, int(x0.size // batch))
  metrics = {
      "loss": loss,
      "loss_per_dim": loss / dims,
      "eps_mse": jnp.mean(jnp.sum(jnp.square(eps_pred - eps), axis=sum_axes)),
      "weight_mean": jnp.mean(weight),
      "t_mean": jnp.mean(t),
  }
  return loss, metrics
