"""Consistency models: the parameterization, the noise grids and curricula, multistep sampling.

Noise convention (this whole module): EDM's variance-exploding form (Karras et
al. 2022). A noisy point at noise level sigma is x_sigma = x0 + sigma z,
z ~ N(0, I), with sigma in [sigma_min, sigma_max] = [0.002, 80] by default; the
probability-flow ODE is dx/dsigma = (x - D(x; sigma))/sigma. A consistency
function f(x, sigma) maps every point of one ODE trajectory to its end at
sigma_min (Song et al. 2023, "Consistency Models", CM below). To use the
diffusion samplers' time t in [0, 1] (t = 1 is noise), take the VE schedule
`schedules.ve(sigma_min, sigma_max)`: sigma(t) = sigma_min (sigma_max/sigma_min)^t,
so t = 0 is sigma_min (where f is the identity) and t = 1 is sigma_max.

Contents
* `scalings` / `consistency_fn`: f(x, s) = c_skip(s) x + c_out(s) F(c_in(s) x, c_noise(s)) with
      c_skip = sd^2 / ((s - smin)^2 + sd^2),   c_out = sd (s - smin) / sqrt(s^2 + sd^2),
      c_in = 1 / sqrt(s^2 + sd^2),             c_noise = ln(s) / 4
  (CM appendix C, EDM's preconditioning shifted so that c_skip(smin) = 1 and
  c_out(smin) = 0: the boundary condition f(x, smin) = x holds exactly, for any F).
* `karras_sigmas(i, num_points)`: s_i = (smin^(1/rho) + i/(N-1) (smax^(1/rho) - smin^(1/rho)))^rho,
  i = 0..N-1 ascending (CM eq. 5 with 0-based i), elementwise so N may be traced.
* Curricula for the number of discretization points N(k) at training step k of K:
    original CT (CM appendix C):  N(k) = ceil(sqrt(k/K ((s1 + 1)^2 - s0^2) + s0^2) - 1) + 1,
                                  target EMA mu(k) = exp(s0 ln(mu0) / N(k));
    improved CT (Song & Dhariwal 2023, "Improved Techniques for Training Consistency
    Models", iCT below, sec. 3.4): N(k) = min(s0 2^floor(k/K'), s1) + 1,
                                  K' = floor(K / (log2 floor(s1/s0) + 1)), s0 = 10, s1 = 1280.
* `lognormal_index_probs`: iCT's noise-index distribution (sec. 3.5)
      p(i) propto erf((ln s_{i+1} - P_mean)/(sqrt2 P_std)) - erf((ln s_i - P_mean)/(sqrt2 P_std)),
  P_mean = -1.1, P_std = 2.0, over the N - 1 intervals of the grid (padded to a
  static length so N may be traced); `ict_weight`: lambda(s_i) = 1/(s_{i+1} - s_i).
* `pseudo_huber`: d(x, y) = sqrt(||x - y||^2 + c^2) - c per example, c = 0.00054 sqrt(dim) (iCT sec. 3.3).
* Teacher ODE steps for distillation: `denoiser_from_diffusion` turns a diffusion
  model (any schedule, any prediction) into D(x; sigma), `teacher_step` takes one
  Euler or Heun step of the PF-ODE in sigma (EDM Algorithm 1/2 without churn).
* `multistep_sample`: CM Algorithm 1, x <- f(x, tau_0), then for n >= 1
  x <- f(x + sqrt(tau_n^2 - smin^2) z_n, tau_n); `sample` is the same behind
  the research/diffusion/contract.py sampler contract (registered as "consistency").
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np

from research import registry
from research.diffusion import adapters
from research.diffusion import grid as grid_lib
from research.diffusion import parameterization as param_lib
from research.diffusion.contract import per_example_normal, register

__all__ = [
    "SIGMA_DATA", "SIGMA_MIN", "SIGMA_MAX", "RHO", "P_MEAN", "P_STD",
    "scalings", "consistency_fn", "karras_sigmas", "ct_num_points", "ct_target_decay",
    "ict_num_points", "ict_doubling_period", "lognormal_index_probs", "ict_weight",
    "pseudo_huber", "pseudo_huber_c", "denoiser_from_diffusion", "teacher_step",
    "TEACHER_SOLVERS", "sample_sigmas", "snap_to_grid", "multistep_sample", "sample", "sample_nfe",
]

SIGMA_DATA = 0.5
SIGMA_MIN = 0.002
SIGMA_MAX = 80.0
RHO = 7.0
P_MEAN = -1.1
P_STD = 2.0
TEACHER_SOLVERS = ("euler", "heun")


def _check_sigma_range(sigma_min, sigma_max, sigma_data=1.0):
  if not 0 < sigma_min < sigma_max or not math.isfinite(sigma_max):
    raise ValueError(f"sigma_min, sigma_max must satisfy 0 < sigma_min < sigma_max < inf, "
                     f"got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}")
  if not sigma_data > 0:
    raise ValueError(f"sigma_data must be > 0, got sigma_data={sigma_data!r}")


# -----------------------------------------------------------------------------
# The parameterization.
# -----------------------------------------------------------------------------
def scalings(sigma, *, sigma_data=SIGMA_DATA, sigma_min=SIGMA_MIN):
  """(c_skip, c_out, c_in, c_noise) of a consistency model at noise level sigma (CM appendix C).

  c_skip = sd^2/((s - smin)^2 + sd^2), c_out = sd (s - smin)/sqrt(s^2 + sd^2),
  c_in = 1/sqrt(s^2 + sd^2), c_noise = ln(s)/4. At s = smin, c_skip = 1 and
  c_out = 0 exactly (s - smin is an exact float zero), so f(x, smin) = x.
  Elementwise in sigma (float32 unless wider).
  """
  if not sigma_data > 0:
    raise ValueError(f"sigma_data must be > 0, got sigma_data={sigma_data!r}")
  s = jnp.asarray(sigma)
  if not jnp.issubdtype(s.dtype, jnp.floating):
    s = s.astype(jnp.float32)
  sd2 = sigma_data ** 2
  shifted = s - jnp.asarray(sigma_min, s.dtype)
  c_skip = sd2 / (shifted * shifted + sd2)
  c_in = jax.lax.rsqrt(s * s + sd2)
  c_out = sigma_data * shifted * c_in
  c_noise = 0.25 * jnp.log(s)
  return c_skip, c_out, c_in, c_noise


def consistency_fn(net_apply, params, *, sigma_data=SIGMA_DATA, sigma_min=SIGMA_MIN):
  """f(x, sigma) = c_skip(sigma) x + c_out(sigma) F_theta(c_in(sigma) x, c_noise(sigma)) (CM eq. 3).

  net_apply(params, x_in, c_noise) -> array of x's shape is the raw network F
  (e.g. research.nets.mlp.functional(VelocityMLP(...))[1]); c_noise has shape
  (batch,). The returned f takes x of shape (B, ...) and sigma of shape () or
  (B,) and satisfies f(x, sigma_min) = x exactly (`scalings`).
  """

  def f(x, sigma):
    sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), x.shape[:1])
    c_skip, c_out, c_in, c_noise = scalings(sigma, sigma_data=sigma_data, sigma_min=sigma_min)
    c_skip, c_out, c_in = (param_lib.broadcast_to_batch(c, x) for c in (c_skip, c_out, c_in))
    return c_skip * x + c_out * net_apply(params, c_in * x, c_noise)

  return f


# -----------------------------------------------------------------------------
# Discretization, curricula, index distribution, weighting, distance.
# -----------------------------------------------------------------------------
def karras_sigmas(i, num_points, *, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, rho=RHO):
  """The i-th of N = num_points Karras noise levels, ascending (CM eq. 5, 0-based).

  s_i = (smin^(1/rho) + i/(N - 1) (smax^(1/rho) - smin^(1/rho)))^rho for i = 0..N-1,
  so s_0 = smin and s_{N-1} = smax (set exactly). i and num_points may be traced
  integers (N varies with the curriculum); N >= 2.
  """
  if not any(isinstance(v, jax.core.Tracer) for v in (sigma_min, sigma_max)):
    _check_sigma_range(float(sigma_min), float(sigma_max))
  if not rho > 0:
    raise ValueError(f"rho must be > 0, got rho={rho!r}")
  if isinstance(num_points, (int, np.integer)) and num_points < 2:
    raise ValueError(f"num_points must be >= 2, got num_points={num_points!r}")
  return _karras(i, num_points, sigma_min, sigma_max, rho)


def _karras(i, num_points, sigma_min, sigma_max, rho):
  i = jnp.asarray(i)
  n = jnp.asarray(num_points)
  smin, smax = jnp.asarray(sigma_min, jnp.float32), jnp.asarray(sigma_max, jnp.float32)
  frac = i.astype(jnp.float32) / (n - 1).astype(jnp.float32)
  lo, hi = smin ** (1.0 / rho), smax ** (1.0 / rho)
  s = (lo + frac * (hi - lo)) ** rho
  s = jnp.where(i <= 0, smin, s)
  return jnp.where(i >= n - 1, smax, s).astype(jnp.float32)


def ct_num_points(step, total_steps, *, s0=2, s1=150):
  """Original CT curriculum N(k) = ceil(sqrt(k/K ((s1 + 1)^2 - s0^2) + s0^2) - 1) + 1 (CM appendix C).

  Grows from N(0) = s0 to N(K) = s1 + 1 points. `step` may be traced; returns int32.
  (CM's CIFAR-10 values: s0 = 2, s1 = 150, mu0 = 0.9.)
  """
  if total_steps < 1 or s0 < 1 or s1 < s0:
    raise ValueError(f"need total_steps >= 1 and 1 <= s0 <= s1, got total_steps={total_steps!r}, "
                     f"s0={s0!r}, s1={s1!r}")
  k = jnp.clip(jnp.asarray(step, jnp.float32), 0.0, float(total_steps))
  inner = k / total_steps * ((s1 + 1.0) ** 2 - s0 ** 2) + s0 ** 2
  n = jnp.ceil(jnp.sqrt(inner) - 1.0) + 1.0
  return jnp.maximum(n, 2.0).astype(jnp.int32)


def ct_target_decay(num_points, *, s0=2, mu0=0.9):
  """Original CT target-network EMA decay mu(k) = exp(s0 ln(mu0) / N(k)) (CM appendix C)."""
  if not 0.0 <= mu0 < 1.0:
    raise ValueError(f"mu0 must be in [0, 1), got mu0={mu0!r}")
  if mu0 == 0.0:
    return jnp.zeros_like(jnp.asarray(num_points, jnp.float32))
  return jnp.exp(s0 * math.log(mu0) / jnp.asarray(num_points, jnp.float32))


def ict_doubling_period(total_steps, *, s0=10, s1=1280):
  """K' = floor(K / (log2 floor(s1/s0) + 1)): steps between doublings of N (iCT sec. 3.4)."""
  if total_steps < 1 or s0 < 1 or s1 < s0:
    raise ValueError(f"need total_steps >= 1 and 1 <= s0 <= s1, got total_steps={total_steps!r}, "
                     f"s0={s0!r}, s1={s1!r}")
  return max(1, math.floor(total_steps / (math.log2(math.floor(s1 / s0)) + 1)))


def ict_num_points(step, total_steps, *, s0=10, s1=1280):
  """Improved CT curriculum N(k) = min(s0 2^floor(k/K'), s1) + 1 (iCT eq. 6). Returns int32."""
  period = ict_doubling_period(total_steps, s0=s0, s1=s1)
  doublings = jnp.minimum(jnp.maximum(jnp.asarray(step, jnp.int32), 0) // period, 24)
  return jnp.minimum(s0 * jnp.left_shift(jnp.int32(1), doublings), s1).astype(jnp.int32) + 1


def lognormal_index_probs(num_points, max_points, *, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX,
                          rho=RHO, p_mean=P_MEAN, p_std=P_STD):
  """p(i) for the interval [s_i, s_{i+1}], i = 0..N-2, of an N-point Karras grid (iCT sec. 3.5).

  p(i) propto erf((ln s_{i+1} - P_mean)/(sqrt2 P_std)) - erf((ln s_i - P_mean)/(sqrt2 P_std)):
  the mass that ln(sigma) ~ N(P_mean, P_std^2) puts on the interval. Returns a
  vector of the static length max_points - 1 (entries i >= N - 1 are 0) summing to 1;
  num_points may be traced (2 <= N <= max_points).
  """
  if not p_std > 0:
    raise ValueError(f"p_std must be > 0, got p_std={p_std!r}")
  i = jnp.arange(max_points - 1)
  lo = karras_sigmas(i, num_points, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
  hi = karras_sigmas(i + 1, num_points, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
  scale = math.sqrt(2.0) * p_std
  mass = jsp.erf((jnp.log(hi) - p_mean) / scale) - jsp.erf((jnp.log(lo) - p_mean) / scale)
  mass = jnp.where(i < jnp.asarray(num_points) - 1, mass, 0.0)
  return mass / jnp.sum(mass)


def ict_weight(sigma_lo, sigma_hi):
  """iCT's loss weight lambda(s_i) = 1/(s_{i+1} - s_i) (iCT sec. 3.5)."""
  return 1.0 / (sigma_hi - sigma_lo)


def pseudo_huber_c(dim):
  """iCT's pseudo-Huber constant c = 0.00054 sqrt(dim) (dim = entries per example)."""
  return 0.00054 * math.sqrt(dim)


def pseudo_huber(x, y, c=None):
  """Per-example pseudo-Huber distance d = sqrt(||x - y||^2 + c^2) - c (iCT sec. 3.3; Charbonnier 1997).

  The norm is over all non-batch axes; default c = 0.00054 sqrt(dim). For
  ||x - y|| << c, d ~ ||x - y||^2 / (2c); for ||x - y|| >> c, d ~ ||x - y||.
  Computed as sq / (sqrt(sq + c^2) + c) (no cancellation). Returns shape (B,).
  """
  x, y = jnp.asarray(x), jnp.asarray(y)
  if x.shape != y.shape:
    raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
  if c is None:
    c = pseudo_huber_c(math.prod(x.shape[1:]))
  if not isinstance(c, jax.core.Tracer) and not c > 0:
    raise ValueError(f"c must be > 0, got c={c!r}")
  sq = jnp.sum(jnp.reshape((x - y) ** 2, (x.shape[0], -1)), axis=-1)
  return sq / (jnp.sqrt(sq + c * c) + c)


# -----------------------------------------------------------------------------
# A diffusion teacher in sigma space (consistency distillation).
# -----------------------------------------------------------------------------
def denoiser_from_diffusion(model_fn, schedule, prediction="eps"):
  """D(x; sigma) = E[x0 | x0 + sigma z = x] from a diffusion model of any schedule and prediction.

  The diffusion model sees x_t = alpha(t) x and t = schedule.t_from_edm_sigma(sigma)
  (edm sigma = sigma(t)/alpha(t), as in research/diffusion/karras.py), and its
  prediction is converted to x0 with parameterization.to_x0. t is clipped to
  [t_min, 1], the range the teacher was trained on: below t_min (sigma < the
  schedule's smallest trained noise, e.g. ~0.01 for linear DDPM betas) D is
  evaluated at t_min, an O(sigma) error there. Returns D(x, sigma) with sigma
  of shape () or (B,).
  """
  adapters.check_prediction(prediction)

  def denoise(x, sigma):
    sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), x.shape[:1])
    t = jnp.clip(schedule.t_from_edm_sigma(sigma), schedule.t_min, schedule.t_max)
    t = t.astype(jnp.float32)
    alpha, sig = schedule.alpha(t), schedule.sigma(t)
    alpha_b = param_lib.broadcast_to_batch(alpha, x)
    x_t = alpha_b * x
    pred = model_fn(x_t, t)
    return param_lib.to_x0(pred, x_t, alpha, sig, prediction).astype(x.dtype)

  return denoise


def teacher_step(denoiser, x, sigma_from, sigma_to, *, solver="heun"):
  """One PF-ODE step dx/dsigma = (x - D(x; sigma))/sigma from sigma_from to sigma_to (EDM Alg. 1).

  euler: x' = x + (s_to - s_from) d(x, s_from);  heun: additionally
  x' = x + (s_to - s_from) (d(x, s_from) + d(x', s_to))/2 (sigma_to > 0).
  CM uses Heun for CD. sigma_from/sigma_to: shape () or (B,).
  """
  if solver not in TEACHER_SOLVERS:
    raise ValueError(f"unknown solver={solver!r}; valid: {list(TEACHER_SOLVERS)}")
  s_from = param_lib.broadcast_to_batch(jnp.broadcast_to(sigma_from, x.shape[:1]), x)
  s_to = param_lib.broadcast_to_batch(jnp.broadcast_to(sigma_to, x.shape[:1]), x)
  d = (x - denoiser(x, sigma_from)) / s_from
  x_next = x + (s_to - s_from) * d
  if solver == "euler":
    return x_next
  d_next = (x_next - denoiser(x_next, sigma_to)) / s_to
  return x + (s_to - s_from) * 0.5 * (d + d_next)


# -----------------------------------------------------------------------------
# Multistep consistency sampling (CM Algorithm 1).
# -----------------------------------------------------------------------------
def sample_sigmas(num_steps, *, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, rho=RHO):
  """Default tau_0 = smax > tau_1 > ... > tau_{n-1}: the first n of n + 1 Karras levels to smin.

  One step: (smax,); two steps with the defaults: (80, 2.52). CM picks tau by
  search for each model (e.g. 0.821 for 2-step CIFAR-10 iCT); pass explicit
  sigmas to `multistep_sample` to do so.
  """
  n = grid_lib.check_num_steps(num_steps)
  i = jnp.arange(n, 0, -1)
  return karras_sigmas(i, n + 1, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)


def snap_to_grid(sigmas, num_points, *, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, rho=RHO):
  """Each sigma replaced by the nearest (in log sigma) level s_1..s_{N-1} of the N-point Karras grid.

  A model trained on a fixed grid (CD with N = 18) has only been fit at those
  levels; CM's multistep sampling of CD models picks its tau_n among them.
  """
  grid = karras_sigmas(jnp.arange(1, num_points), num_points, sigma_min=sigma_min,
                       sigma_max=sigma_max, rho=rho)
  sigmas = jnp.asarray(sigmas, jnp.float32)
  nearest = jnp.argmin(jnp.abs(jnp.log(sigmas)[:, None] - jnp.log(grid)[None, :]), axis=1)
  return grid[nearest]


def multistep_sample(key, f, z, sigmas, *, sigma_min=SIGMA_MIN):
  """CM Algorithm 1: x = f(tau_0 z, tau_0); x = f(x + sqrt(tau_n^2 - smin^2) z_n, tau_n), n >= 1.

  f(x, sigma) is a consistency function (sigma of shape (B,)); z ~ N(0, I) of the
  batch's shape; sigmas = (tau_0, ..., tau_{n-1}) decreasing; NFE = len(sigmas).
  z_n for example i is normal(fold_in(fold_in(key, n), i)) (batch-size
  independent). One lax.scan over sigmas[1:].
  """
  sigmas = jnp.asarray(sigmas, jnp.float32)
  if sigmas.ndim != 1 or sigmas.shape[0] < 1:
    raise ValueError(f"sigmas must be a non-empty 1-D array, got shape {sigmas.shape}")
  z = jnp.asarray(z, jnp.float32)
  x = f(sigmas[0] * z, jnp.full(z.shape[:1], sigmas[0]))
  if sigmas.shape[0] == 1:
    return x

  def step(x, inputs):
    n, tau = inputs
    noise = per_example_normal(key, n, x)
    scale = jnp.sqrt(jnp.maximum(tau * tau - sigma_min * sigma_min, 0.0))
    return f(x + scale * noise, jnp.full(x.shape[:1], tau)), None

  x, _ = jax.lax.scan(step, x, (jnp.arange(1, sigmas.shape[0]), sigmas[1:]))
  return x


def sample_nfe(num_steps, **options):
  """The consistency sampler evaluates f once per step: NFE = num_steps."""
  del options
  return grid_lib.check_num_steps(num_steps)


@register("consistency", nfe=sample_nfe, prediction="x0", stochastic=True,
          options=(dataclasses.replace(adapters.PREDICTION, default="x0"),
                   registry.Option("sigmas", None, registry.optional(registry.parse_floats), None,
                                   "edm noise levels tau_0 > ... (None: Karras levels)"),
                   registry.real("sigma_min", None, low=0.0, doc="level f is anchored at"),
                   dataclasses.replace(grid_lib.RHO, default=RHO), grid_lib.TIMESTEPS))
def sample(key, model_fn, x_T, schedule, *, num_steps, prediction, sigmas, sigma_min, rho,
           timesteps):
  """Multistep consistency sampling behind the research/diffusion/contract.py sampler contract.

  model_fn(x, t) is a consistency function / x0-predictor in the schedule's time:
  at time t it must return the end of the PF-ODE trajectory through x (for
  schedules.ve(smin, smax): t = ln(s/smin)/ln(smax/smin), the network sees
  f(x, sigma(t))). For any schedule, the state is kept in VE form y = x/alpha
  (noise level s = edm_sigma(t)) and the model is called at x = alpha(t) y,
  t = schedule.t_from_edm_sigma(tau_n). x_T is in the schedule's scale at
  t = 1 (N(0, smax^2 I) for VE). num_steps = number of f evaluations (NFE);
  num_steps = 1 is one-step generation f(x_T, t = 1). sigmas (edm sigmas,
  decreasing, length num_steps, first = s(1)) default to `sample_sigmas` between
  s(1) and sigma_min; or give the evaluation times `timesteps` (tau_n =
  edm_sigma(t_n)). sigma_min (the level f is anchored at) defaults to
  edm_sigma(t = 0) of the schedule (smin for VE, 0 for VP). prediction must be "x0".
  """
  n = num_steps
  del prediction
  if sigma_min is None:
    sigma_min = schedule.edm_sigma(jnp.float32(0.0))
  sigma_min = jnp.asarray(sigma_min, jnp.float32)
  sigma_top = schedule.edm_sigma(jnp.float32(schedule.t_max)).astype(jnp.float32)
  if timesteps is not None:
    if sigmas is not None:
      raise ValueError("give sigmas or timesteps, not both")
    sigmas = schedule.edm_sigma(jnp.asarray(grid_lib.check_timesteps(timesteps, n), jnp.float32))
  if sigmas is None:
    sigmas = _karras(jnp.arange(n, 0, -1), n + 1, jnp.maximum(sigma_min, 1e-6), sigma_top, rho)
  sigmas = jnp.asarray(sigmas, jnp.float32)
  if sigmas.shape != (n,):
    raise ValueError(f"sigmas must have shape (num_steps,) = ({n},), got shape {sigmas.shape}")
  alpha_top = schedule.alpha(jnp.float32(schedule.t_max))

  def f(y, sigma):
    t = schedule.t_from_edm_sigma(sigma).astype(jnp.float32)
    t = jnp.where(sigma >= sigma_top, jnp.float32(schedule.t_max), t)
    x = param_lib.broadcast_to_batch(schedule.alpha(t), y) * y
    return model_fn(x, t)

  y_T = jnp.asarray(x_T, jnp.float32) / alpha_top
  z = y_T / sigma_top
  return multistep_sample(key, f, z, sigmas, sigma_min=sigma_min)
