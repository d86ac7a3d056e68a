"""Gradient-estimator variance vs number of samples: reparameterisation vs score function.

Objective L(mu, log_var) = E_{z ~ N(mu, sigma^2)}[z^2] = mu^2 + sigma^2 at mu = 1,
log_var = 0 (sigma = 1), so dL/dmu = 2 mu = 2 and dL/dlog_var = sigma^2 = 1.
Per-sample estimators (research/sampling/montecarlo.py; Mohamed et al. 2020):
  pathwise / reparameterised (Kingma & Welling 2014): g_mu = 2 z,
      g_log_var = 2 z * 0.5 sigma eps, per-sample variances 4 sigma^2 = 4 and 3;
  score function / REINFORCE (Williams 1992): g_mu = z^2 eps / sigma,
      g_log_var = z^2 * 0.5 (eps^2 - 1), per-sample variances
      (mu^4 + 18 mu^2 sigma^2 + 15 sigma^4) / sigma^2 - 4 mu^2 = 30 and 34;
  score function with the leave-one-out baseline (Kool et al. 2019).
The variance of the n-sample mean over independent repeats (for the i.i.d.
estimators: repeat r's first n terms of one draw, one compile for every n; for
the baseline, whose terms depend on n: `montecarlo.gradient_variance`) falls as
1/n for both, with the score function's constant
7.5x (mu) and 11x (log_var) larger; plotted log-log with the closed forms.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from experiments.figures import common
from research.sampling import montecarlo

NAME = "gradient_variance"
MU, LOG_VAR = 1.0, 0.0
# Closed-form per-sample variances at MU = 1, sigma = 1 (module docstring).
PER_SAMPLE_VARIANCE = {"reparameterised": {"mu": 4.0, "log_var": 3.0},
                       "score function": {"mu": 30.0, "log_var": 34.0}}
ESTIMATORS = (
    ("reparameterised", montecarlo.reparam_gradient, 1),
    ("score function", montecarlo.score_function_gradient, 1),
    ("score function + leave-one-out baseline",
     functools.partial(montecarlo.score_function_gradient, baseline="leave_one_out"), 2),
)


def objective(z):
  """f(z) = sum_d z_d^2, batch-wise: (n, d) -> (n,)."""
  return jnp.sum(jnp.square(z), axis=-1)


def _iid_curve(key, estimator, sample_sizes, num_repeats: int) -> np.ndarray:
  """Rows (mean_mu, var_mu, mean_log_var, var_log_var) per n for an estimator with i.i.d. terms.

  One call draws num_repeats x max(n) per-sample terms; the n-sample estimate of
  repeat r is the mean of its first n terms (so one compile serves every n).
  """
  mu, log_var = jnp.full((1,), MU), jnp.full((1,), LOG_VAR)
  n_max = max(sample_sizes)
  terms = jax.jit(lambda k: estimator(k, objective, mu, log_var, num_repeats * n_max))(key)
  rows = []
  for n in sample_sizes:
    est = [np.asarray(t, np.float64).reshape(num_repeats, n_max)[:, :n].mean(1)
           for t in (terms.mu, terms.log_var)]
    rows.append([est[0].mean(), est[0].var(ddof=1), est[1].mean(), est[1].var(ddof=1)])
  return np.asarray(rows)


def _repeated_curve(key, estimator, sample_sizes, num_repeats: int) -> np.ndarray:
  """The same rows from `montecarlo.gradient_variance` (one compile per n; for baselines
  whose terms depend on n, e.g. leave-one-out)."""
  mu, log_var = jnp.full((1,), MU), jnp.full((1,), LOG_VAR)
  rows = []
  for n in sample_sizes:
    fn = jax.jit(lambda k, n=n: montecarlo.gradient_variance(
        k, estimator, objective, mu, log_var, n, num_repeats=num_repeats))
    mean, var = fn(jax.random.fold_in(key, n))
    rows.append([float(mean.mu[0]), float(var.mu[0]), float(mean.log_var[0]),
                 float(var.log_var[0])])
  return np.asarray(rows)


def variance_curves(key, sample_sizes, num_repeats: int, loo_sizes=None) -> dict:
  """Mean and variance of each estimator's n-sample gradient for every n (over num_repeats).

  loo_sizes: the n of the leave-one-out curve (default: sample_sizes with n >= 2).
  """
  curves = {}
  for e, (label, estimator, min_n) in enumerate(ESTIMATORS):
    k = jax.random.fold_in(key, e)
    if label in PER_SAMPLE_VARIANCE:
      ns = list(sample_sizes)
      rows = _iid_curve(k, estimator, ns, num_repeats)
    else:
      ns = [n for n in (loo_sizes or sample_sizes) if n >= min_n]
      rows = _repeated_curve(k, estimator, ns, num_repeats)
    curves[label] = {"n": ns, "mean_mu": rows[:, 0], "variance_mu": rows[:, 1],
                     "mean_log_var": rows[:, 2], "variance_log_var": rows[:, 3]}
    if label in PER_SAMPLE_VARIANCE:
      per = PER_SAMPLE_VARIANCE[label]
      curves[label]["theory_mu"] = per["mu"] / np.asarray(ns, np.float64)
      curves[label]["theory_log_var"] = per["log_var"] / np.asarray(ns, np.float64)
  return curves


def plot(path: str, curves: dict, num_repeats: int) -> str:
  """Log-log variance vs n for the mu and log_var gradients, with the closed forms dashed."""
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for ax, param, true in ((axes[0], "mu", 2.0), (axes[1], "log_var", 1.0)):
    for i, (label, c) in enumerate(curves.items()):
      line, = ax.loglog(c["n"], c[f"variance_{param}"], "o-", ms=3, label=label)
      if f"theory_{param}" in c:
        ax.loglog(c["n"], c[f"theory_{param}"], "--", color=line.get_color(), lw=1,
                  label=f"{PER_SAMPLE_VARIANCE[label][param]:g} / n")
    ax.set(xlabel="samples n", ylabel="variance of the n-sample estimate",
           title=f"d/d{param} E[z^2] (true value {true:g}), z ~ N(1, 1)")
    ax.grid(True, which="both", alpha=0.3)
  axes[0].legend(fontsize=7)
  fig.suptitle(f"gradient-estimator variance ({num_repeats} repeats per point)", fontsize=9)
  return common.save_figure(fig, path)


def run(out_dir: str, *, quick: bool) -> dict:
  """Compute and draw the figure into out_dir/gradient_variance.{png,json}; returns a summary."""
  max_log2, num_repeats = (8, 400) if quick else (12, 2000)
  sizes = [2**i for i in range(max_log2 + 1)]
  loo_sizes = sizes[1::2] if quick else sizes[1:]   # one compile per n
  curves = variance_curves(jax.random.key(0), sizes, num_repeats, loo_sizes)
  data = {"mu": MU, "log_var": LOG_VAR, "num_repeats": num_repeats, "curves": curves}
  outputs = common.write_outputs(out_dir, NAME, data, lambda png: plot(png, curves, num_repeats))
  ratio = (curves["score function"]["variance_mu"] / curves["reparameterised"]["variance_mu"])
  return {**outputs, "score_over_reparam_mu": float(np.median(ratio))}
