"""Sampler error vs NFE against the exact PF-ODE map (the DPM-Solver paper's figure).

With the analytic model E[eps | x_t] of a Gaussian mixture (research.diffusion.exact)
and DDPM's discrete linear schedule (T = 1000), every deterministic sampler of the
registry (configs/bench_samplers.py's list minus the stochastic ones) maps the same
x_T ~ N(0, I) to x0 at several NFE budgets (the largest num_steps whose exact NFE
fits, each sampler with its default step spacing). The error is

    RMSE = sqrt(mean_i ||x0_i - x0_exact_i||^2),

where x0_exact is the probability-flow ODE map of the same x_T (Dopri8 in float64,
rtol = atol = 1e-10; `exact.pf_ode_exact`). Plotted log-log per sampler, as in Lu
et al. 2022 (DPM-Solver, fig. 3) and 2022b (DPM-Solver++). Problems: ring8 (2-D)
and, in full mode, an 8-component random mixture in 8-D (means ~ N(0, 9 I)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from configs import bench_samplers
from experiments.benchmarks import samplers as samplers_bench
from experiments.figures import common
from research.data import gmm
from research.diffusion import exact, samplers, schedules

NAME = "sampler_error_vs_nfe"
FULL_BUDGETS = (4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50)
QUICK_BUDGETS = (5, 10)      # every (sampler, steps) pair is one compile


def deterministic_samplers() -> list[tuple[str, str, dict]]:
  """(label, registry name, options) of every deterministic sampler in the benchmark list."""
  return [(label, name, dict(options)) for label, name, options in bench_samplers.OURS
          if not samplers_bench.is_stochastic(name, options)]


def steps_for_budget(name: str, options: dict, budget: int) -> int | None:
  """The largest num_steps whose exact NFE is <= budget (None if one step is over it)."""
  best = None
  for n in range(1, budget + 1):
    if samplers.nfe(name, n, **options) <= budget:
      best = n
  return best


def exact_map(mix: gmm.GaussianMixture, betas: np.ndarray, x_T: np.ndarray) -> np.ndarray:
  """The PF-ODE map of x_T under the exact mixture model, Dopri8 in float64."""
  with jax.enable_x64(True):
    sched = schedules.discrete_vp(jnp.asarray(betas, jnp.float64))
    mix64 = gmm.GaussianMixture(jnp.asarray(mix.weights, jnp.float64),
                                jnp.asarray(mix.means, jnp.float64),
                                jnp.asarray(mix.stds, jnp.float64))
    model = lambda x, t: exact.mixture_eps(mix64, x, sched.alpha(t), sched.sigma(t))
    return np.asarray(exact.pf_ode_exact(model, jnp.asarray(x_T, jnp.float64), sched))


def error_curves(mix: gmm.GaussianMixture, num_samples: int, budgets, key) -> dict:
  """{label: {"nfe": [...], "steps": [...], "rmse": [...]}} plus the problem's data."""
  betas = np.asarray(schedules.linear_betas(1000, 1e-4, 0.02), np.float64)
  schedule = schedules.discrete_vp(jnp.asarray(betas, jnp.float32))
  x_T = jax.random.normal(key, (num_samples, mix.dim), jnp.float32)
  x_exact = exact_map(mix, betas, np.asarray(x_T, np.float64))
  model = exact.mixture_model_fn(mix, schedule)
  curves = {}
  for label, name, options in deterministic_samplers():
    sampler = samplers.get(name)
    row = {"nfe": [], "steps": [], "rmse": []}
    for budget in budgets:
      steps = steps_for_budget(name, options, budget)
      if steps is None:
        continue
      nfe = samplers.nfe(name, steps, **options)
      if row["nfe"] and nfe == row["nfe"][-1]:
        continue                           # the same run as the previous budget
      fn = jax.jit(lambda key, x, sampler=sampler, steps=steps, options=options: sampler(
          key, model, x, schedule, num_steps=steps, **options))
      x = np.asarray(fn(jax.random.key(7), x_T), np.float64)
      row["nfe"].append(nfe)
      row["steps"].append(steps)
      row["rmse"].append(float(np.sqrt(np.mean(np.sum((x - x_exact) ** 2, -1)))))
    curves[label] = row
  return curves


def problems(quick: bool) -> list[tuple[str, gmm.GaussianMixture]]:
  """(title, mixture): ring8 always; an 8-D random mixture in full mode."""
  out = [("ring8 (2-D)", samplers_bench.mixture(2))]
  if not quick:
    out.append(("8 random components in 8-D, mean scale 3", samplers_bench.mixture(8, 3.0)))
  return out


def plot(path: str, panels: list[dict]) -> str:
  """Log-log RMSE vs NFE, one line per sampler, one panel per problem."""
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.6), squeeze=False)
  styles = ["-", "--", ":", "-."]
  for ax, panel in zip(axes[0], panels):
    for i, (label, c) in enumerate(panel["curves"].items()):
      ax.loglog(c["nfe"], c["rmse"], styles[(i // 10) % 4], marker="o", ms=3, lw=1.2, label=label)
    ax.set(xlabel="NFE (network evaluations)", ylabel="RMSE to the exact PF-ODE map",
           title=f"{panel['title']}, {panel['num_samples']} samples")
    ax.grid(True, which="both", alpha=0.3)
    ticks = list(panel["budgets"])
    ax.set_xticks(ticks, [str(n) for n in ticks], fontsize=7)
    ax.minorticks_off()
  axes[0][-1].legend(fontsize=7, ncol=2)
  fig.suptitle("deterministic samplers vs the exact probability-flow ODE\n(analytic mixture "
               "model, linear DDPM schedule T = 1000)", fontsize=9)
  return common.save_figure(fig, path)


def run(out_dir: str, *, quick: bool) -> dict:
  """Compute and draw the figure into out_dir/sampler_error_vs_nfe.{png,json}; returns a summary."""
  budgets = QUICK_BUDGETS if quick else FULL_BUDGETS
  num_samples = 200 if quick else 1000
  panels = []
  for i, (title, mix) in enumerate(problems(quick)):
    panels.append({"title": title, "num_samples": num_samples, "budgets": budgets,
                   "curves": error_curves(mix, num_samples, budgets, jax.random.key(i))})
  outputs = common.write_outputs(out_dir, NAME, {"panels": panels}, lambda png: plot(png, panels))
  first = panels[0]["curves"]
  best = min(first, key=lambda label: first[label]["rmse"][-1])
  return {**outputs, "samplers": len(first),
          "best_at_max_nfe": best, "best_rmse": first[best]["rmse"][-1]}
