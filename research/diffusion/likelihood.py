"""Exact log-likelihood of a diffusion model through the probability-flow ODE, and bits/dim.

Time convention: continuous t in [0, 1], t = 1 is noise, t = 0 is clean data,
x_t = alpha(t) x0 + sigma(t) eps (research/diffusion/schedules.py), with
log-SNR lambda(t) = log(alpha/sigma). The probability-flow ODE of the
schedule (Song et al. 2021, "Score-based generative modeling through SDEs",
eq. 13) is

    dx/dt = f(t) x - 1/2 g(t)^2 score(x, t) = f(t) x - sigma(t) lambda'(t) eps_hat(x, t),

with f = d log alpha/dt, g^2 = -2 sigma^2 d lambda/dt and score = -eps_hat/sigma
(for the VP-SDE f = -beta/2, g^2 = beta). Along its solution the log-density
obeys the instantaneous change of variables (Chen et al. 2018, "Neural
ordinary differential equations", Theorem 1):

    d log p_t(x_t)/dt = -div f(x_t, t),
    log p_{t_eps}(x) = log p_1(x_1) + int_{t_eps}^1 div f(x_t, t) dt,

integrated from x_{t_eps} = x (the data point) to t = 1 together with the
running integral, by an adaptive Runge-Kutta solver (diffrax Tsit5 or Dopri5).
The prior is p_1 = N(0, I) for VP schedules and N(0, sigma(1)^2 I) for VE (as
in score_sde). The divergence is exact (trace of the Jacobian, D Jacobian-vector
products: small D only) or Hutchinson's estimate eps^T (df/dx) eps with fixed
Rademacher or Gaussian probes (Hutchinson 1989; Grathwohl et al. 2019, FFJORD),
an unbiased estimate of the log-likelihood. The integration itself is the shared
engine of research/flow/likelihood.py (`ode_log_likelihood`), which flow-matching
models use with their own velocity field.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from research.diffusion import parameterization as param
from research.diffusion import samplers as samplers_lib
from research.flow import likelihood as cnf

__all__ = ["log_likelihood", "probability_flow_drift", "bits_per_dim",
           "dequantization_offset", "OFFSET_8BIT", "OFFSET_8BIT_256_BINS", "SOLVERS",
           "PROBES"]

SOLVERS = cnf.SOLVERS
PROBES = cnf.PROBES

# log of the number of 8-bit levels per unit length of the data (nats per dim):
# x = k / 127.5 - 1 maps k = 0..255 onto [-1, 1] with spacing 2/255.
OFFSET_8BIT = math.log(127.5)
# x = 2 (k + u) / 256 - 1, u ~ U[0, 1): 256 bins of width 1/128 (score_sde's "+7 bits").
OFFSET_8BIT_256_BINS = math.log(128.0)


def probability_flow_drift(model_fn, schedule, prediction="eps"):
  """The probability-flow ODE drift f(x, t) = (log alpha)'(t) x - sigma(t) lambda'(t) eps_hat(x, t).

  Song et al. 2021, eq. 13, written with the log-SNR lambda (Kingma et al.
  2021); derivatives of the schedule by autodiff. t is a scalar.
  """
  param.check_prediction(prediction)
  dlog_alpha = jax.grad(lambda t: schedule.log_alpha(t))
  dlog_snr = jax.grad(lambda t: schedule.log_snr(t))

  def drift(x, t):
    t = jnp.asarray(t, jnp.float32)
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    pred = model_fn(x, samplers_lib.batch_time(t, x))
    eps = param.to_eps(pred, x, alpha, sigma, prediction)
    return (dlog_alpha(t) * x - sigma * dlog_snr(t) * eps).astype(x.dtype)

  return drift


def log_likelihood(key, model_fn, x0, schedule, *, prediction="eps", hutchinson=True,
                   num_probes=1, probe="rademacher", rtol=1e-5, atol=1e-5, t_eps=None,
                   solver="tsit5", max_steps=4096, prior_std=None):
  """Log-likelihood log p(x0) per example by the probability-flow ODE (Song et al. 2021, sec. D.2).

  log p(x0) = log N(x_1; 0, prior_std^2 I) + int_{t_eps}^1 div f(x_t, t) dt
  (module docstring), integrated per example (vmap: each example has its own
  adaptive step sequence, so the result does not depend on the batch) with a
  PID controller (rtol, atol) on the state (x, running integral).

  Args:
    key: PRNG key for the Hutchinson probes (unused when hutchinson=False).
      Example i's probes come from fold_in(key, i) and stay fixed along its
      trajectory (as in FFJORD / score_sde).
    model_fn: model_fn(x, t) -> prediction, x (B, ...), t (B,).
    x0: data, float array (B, ...). It is taken as the state at t_eps.
    schedule: a schedules.Schedule.
    prediction: "eps", "x0", "v" or "score".
    hutchinson: True: eps^T J eps averaged over num_probes probes (unbiased);
      False: the exact trace with D = prod(x0.shape[1:]) Jacobian-vector products.
    num_probes: probes per evaluation (hutchinson only).
    probe: "rademacher" (lower variance) or "gaussian".
    rtol, atol: solver tolerances.
    t_eps: start time, default schedule.t_min (the ODE is stiff at t -> 0).
    solver: "tsit5" (Tsitouras 2011) or "dopri5" (Dormand & Prince 1980).
    max_steps: diffrax's step limit (exceeding it raises at run time).
    prior_std: std of the Gaussian prior at t = 1; default 1 for VP schedules,
      sigma(1) for VE.

  Returns:
    (log_p, nfe): float32 (B,) log-densities in nats (of the data in the scale
    it was given), and int32 (B,) numbers of evaluations of the augmented
    vector field per example, exactly 1 + 6 * (accepted + rejected steps); each
    evaluation is one network forward pass plus num_probes (Hutchinson) or D
    (exact) Jacobian-vector products.

  Raises ValueError for bad options. Note: the estimate refers to p_{t_eps},
  the data density smoothed by the forward process up to t_eps.
  """
  param.check_prediction(prediction)
  t_eps = schedule.t_min if t_eps is None else float(t_eps)
  if not 0.0 <= t_eps < schedule.t_max or (schedule.is_vp and t_eps <= 0.0):
    raise ValueError(f"t_eps must lie in (0, 1) for VP schedules ([0, 1) for VE), "
                     f"got t_eps={t_eps!r}")
  x0 = jnp.asarray(x0)
  if x0.ndim < 1 or not jnp.issubdtype(x0.dtype, jnp.floating):
    raise ValueError(f"x0 must be a float array of shape (batch, ...), got shape "
                     f"{x0.shape} and dtype {x0.dtype}")
  if prior_std is None:
    prior_std = 1.0 if schedule.is_vp else schedule.sigma(jnp.float32(schedule.t_max))
  prior_std = jnp.asarray(prior_std, jnp.float32)
  return cnf.ode_log_likelihood(
      key, probability_flow_drift(model_fn, schedule, prediction), x0.astype(jnp.float32),
      t_start=t_eps, t_end=schedule.t_max,
      prior_log_prob=lambda x1: jnp.sum(jax.scipy.stats.norm.logpdf(x1, 0.0, prior_std)),
      hutchinson=hutchinson, num_probes=num_probes, probe=probe, rtol=rtol, atol=atol,
      solver=solver, max_steps=max_steps)


def dequantization_offset(num_levels=256, low=-1.0, high=1.0):
  """log((num_levels - 1)/(high - low)): nats per dimension between density and mass.

  For data x = low + (high - low) k / (num_levels - 1), k = 0..num_levels-1,
  the bins have width (high - low)/(num_levels - 1), so
  log P(k) ~ log p(x) - D log((num_levels - 1)/(high - low)). 8-bit data in
  [-1, 1]: log(127.5) = OFFSET_8BIT.
  """
  if isinstance(num_levels, bool) or not isinstance(num_levels, (int, np.integer)) \
      or num_levels < 2:
    raise ValueError(f"num_levels must be an int >= 2, got num_levels={num_levels!r}")
  if not high > low:
    raise ValueError(f"high must be > low, got low={low!r}, high={high!r}")
  return math.log((num_levels - 1) / (high - low))


def bits_per_dim(log_p, num_dims, dequantization_offset=OFFSET_8BIT):
  """Bits per dimension of a continuous log-density of discretised data.

      bpd = -(log_p - D * offset) / (D log 2),

  offset = log(1 / bin width) in nats per dimension. Default OFFSET_8BIT =
  log(127.5): 8-bit images scaled by x = k/127.5 - 1 into [-1, 1] (DDPM's
  scaling; bin width 2/255). With uniform dequantization x = 2 (k + u)/256 - 1
  use OFFSET_8BIT_256_BINS = log(128) (score_sde adds 7 = log2(128) bits).
  Pass 0 for data that is continuous already. log_p in nats, any shape.
  """
  if isinstance(num_dims, bool) or not isinstance(num_dims, (int, np.integer)) or num_dims < 1:
    raise ValueError(f"num_dims must be an int >= 1, got num_dims={num_dims!r}")
  log_p = jnp.asarray(log_p, jnp.float32)
  return -(log_p - num_dims * dequantization_offset) / (num_dims * math.log(2.0))
