"""Forward diffusion of 1-D data: the marginal of x_t at t = 0, 250, 500, 750, 999.

DDPM's forward process (Ho et al. 2020) with linear betas 1e-4..0.02, T = 1000:

    x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps,  alpha_bar_t = prod_{s<=t} (1 - beta_s)

(t the 0-based index of alpha_bar, so t = 0 is one step of noise and t = 999 is
the last). For data from a Gaussian mixture p0 = sum_k w_k N(mu_k, s_k^2) the
marginal is again a mixture, q(x_t) = sum_k w_k N(sqrt(ab) mu_k, ab s_k^2 + 1 - ab)
(research.data.gmm.marginal_log_prob): each panel is a histogram of sampled x_t
against that exact density; by t = 999 (alpha_bar ~ 4e-5) it is N(0, 1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments.figures import common
from research.data import gmm
from research.diffusion import schedules

NAME = "forward_diffusion"
TIMES = (0, 250, 500, 750, 999)
WEIGHTS, MEANS, STDS = (0.35, 0.65), (-2.0, 1.5), (0.25, 0.5)


def data_mixture() -> gmm.GaussianMixture:
  """The 1-D two-component data distribution p0."""
  return gmm.GaussianMixture(jnp.asarray(WEIGHTS), jnp.asarray(MEANS)[:, None], jnp.asarray(STDS))


def marginals(key, n: int, *, bins: int = 80, limit: float = 4.0) -> dict:
  """Histograms of n samples of x_t and the exact marginal density at the bin centres, per t."""
  mix = data_mixture()
  alpha_bar = np.asarray(schedules.discrete_vp(schedules.linear_betas(1000, 1e-4, 0.02))
                         .alpha_bar_table, np.float64)
  edges = np.linspace(-limit, limit, bins + 1)
  centres = 0.5 * (edges[:-1] + edges[1:])
  k_x0, k_eps = jax.random.split(key)
  x0 = np.asarray(gmm.sample(k_x0, mix, n))[:, 0]
  out = {"t": list(TIMES), "alpha_bar": [], "histogram": [], "density": [], "mean": [], "std": []}
  for i, t in enumerate(TIMES):
    ab = float(alpha_bar[t])
    eps = np.asarray(jax.random.normal(jax.random.fold_in(k_eps, i), (n,)))
    x_t = np.sqrt(ab) * x0 + np.sqrt(1.0 - ab) * eps
    counts, _ = np.histogram(x_t, bins=edges)
    density = np.exp(np.asarray(gmm.marginal_log_prob(mix, jnp.asarray(centres)[:, None],
                                                      np.sqrt(ab), np.sqrt(1.0 - ab))))
    out["alpha_bar"].append(ab)
    out["histogram"].append(counts / (n * (edges[1] - edges[0])))
    out["density"].append(density)
    out["mean"].append(float(x_t.mean()))
    out["std"].append(float(x_t.std()))
  out.update(bin_edges=edges, bin_centres=centres, n=n,
             normal_pdf=np.exp(-0.5 * centres**2) / np.sqrt(2 * np.pi),
             data={"weights": WEIGHTS, "means": MEANS, "stds": STDS})
  return out


def plot(path: str, data: dict) -> str:
  """One panel per t: histogram of x_t, exact marginal density, and N(0, 1) dashed."""
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(data["t"]), figsize=(3.2 * len(data["t"]), 3.2), sharey=True)
  for i, ax in enumerate(axes):
    ax.stairs(data["histogram"][i], data["bin_edges"], fill=True, alpha=0.45,
              label=f"x_t samples (n={data['n']})")
    ax.plot(data["bin_centres"], data["density"][i], "k-", lw=1.2, label="exact q(x_t)")
    ax.plot(data["bin_centres"], data["normal_pdf"], "r--", lw=0.8, label="N(0, 1)")
    ax.set(title=f"t = {data['t'][i]}  (alpha_bar = {data['alpha_bar'][i]:.3g})", xlabel="x_t")
  axes[0].set_ylabel("density")
  axes[0].legend(fontsize=7)
  fig.suptitle("forward diffusion of a 1-D two-component mixture, linear betas 1e-4..0.02, "
               "T = 1000", fontsize=9)
  return common.save_figure(fig, path)


def run(out_dir: str, *, quick: bool) -> dict:
  """Compute and draw the figure into out_dir/forward_diffusion.{png,json}; returns a summary."""
  data = marginals(jax.random.key(0), 20_000 if quick else 200_000)
  outputs = common.write_outputs(out_dir, NAME, data, lambda png: plot(png, data))
  errors = [float(np.max(np.abs(h - d))) for h, d in zip(data["histogram"], data["density"])]
  return {**outputs, "max_abs_density_error": max(errors),
          "alpha_bar": data["alpha_bar"]}
