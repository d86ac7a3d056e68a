"""Annealed Langevin dynamics on a 2-D Gaussian mixture's exact score (Song & Ermon 2019).

NCSN's Algorithm 1 with the closed-form score of the noised mixture
p_s = p_data * N(0, s^2 I) (research.data.gmm.marginal_score with alpha = 1,
sigma = s): for levels s_1 > ... > s_L (geometric) and T steps per level,

    eps_i = step_ratio * s_i^2,    x <- x + eps_i grad log p_{s_i}(x) + sqrt(2 eps_i) z,

from x ~ N(0, s_1^2 I) (step_ratio = eps_i / s_i^2 is NCSN's constant ratio; the
same rule as research.diffusion.stochastic.langevin). The loop is one lax.scan
that keeps every state, so the figure shows whole trajectories: a few chains
over the contours of log p_data, and where many chains end, coloured by the mode
they reach. No final denoising step (NCSN's original output).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments.figures import common
from research.data import gmm
from research.metrics import distances

NAME = "langevin"
WEIGHTS = (0.3, 0.3, 0.25, 0.15)
MEANS = ((-2.0, -1.0), (2.0, -1.5), (0.0, 2.0), (2.5, 2.0))
STDS = (0.35, 0.5, 0.4, 0.3)


def data_mixture() -> gmm.GaussianMixture:
  """The 2-D four-component target mixture."""
  return gmm.GaussianMixture(jnp.asarray(WEIGHTS), jnp.asarray(MEANS), jnp.asarray(STDS))


def noise_levels(num_levels: int, sigma_max: float = 3.0, sigma_min: float = 0.05) -> np.ndarray:
  """Geometric ladder s_1 = sigma_max > ... > s_L = sigma_min."""
  return np.geomspace(sigma_max, sigma_min, num_levels)


def annealed_langevin(key, mix: gmm.GaussianMixture, num_chains: int, sigmas, steps_per_level: int,
                      step_ratio: float = 0.1, keep_every: int = 1):
  """(final states (num_chains, 2), kept trajectory (num_kept, num_chains, 2)) of NCSN's loop.

  The trajectory holds x_0 (the initial draw) and every keep_every-th state after it.
  """
  sigmas = jnp.asarray(sigmas, jnp.float32)
  level = jnp.repeat(sigmas, steps_per_level)
  index = jnp.arange(level.shape[0])
  k_init, k_steps = jax.random.split(key)
  x = sigmas[0] * jax.random.normal(k_init, (num_chains, mix.dim), jnp.float32)

  def step(x, inputs):
    i, s = inputs
    eps = step_ratio * s**2
    z = jax.random.normal(jax.random.fold_in(k_steps, i), x.shape, jnp.float32)
    x = x + eps * gmm.marginal_score(mix, x, 1.0, s) + jnp.sqrt(2.0 * eps) * z
    return x, x

  final, path = jax.jit(lambda x: jax.lax.scan(step, x, (index, level)))(x)
  path = jnp.concatenate([x[None], path[keep_every - 1::keep_every]])
  return final, path


def run_chains(key, *, num_chains: int, num_shown: int, num_levels: int, steps_per_level: int,
               step_ratio: float = 0.1) -> dict:
  """Run the chains; returns the plotted data (shown trajectories, endpoints, contours, stats)."""
  mix = data_mixture()
  sigmas = noise_levels(num_levels)
  final, path = annealed_langevin(key, mix, num_chains, sigmas, steps_per_level, step_ratio)
  final = np.asarray(final)
  means, stds = np.asarray(mix.means), np.asarray(mix.stds)
  dist = np.linalg.norm(final[:, None, :] - means[None], axis=-1)
  nearest = np.argmin(dist, axis=1)
  near = dist[np.arange(len(final)), nearest] <= 3.0 * stds[nearest]
  # shown chains: the first ones to end at each mode in turn (so every mode gets some)
  per_mode = [list(np.flatnonzero(nearest == k)) for k in range(len(WEIGHTS))]
  shown = []
  while len(shown) < num_shown and any(per_mode):
    for chains in per_mode:
      if chains and len(shown) < num_shown:
        shown.append(int(chains.pop(0)))
  shown = np.asarray(sorted(shown))
  xs = np.linspace(-4.0, 4.5, 120)
  ys = np.linspace(-3.5, 4.0, 110)
  grid = np.stack(np.meshgrid(xs, ys), -1)
  log_p = np.asarray(gmm.log_prob(mix, jnp.asarray(grid, jnp.float32)))
  reference = gmm.sample(jax.random.fold_in(key, 1), mix, num_chains)
  return {
      "sigmas": sigmas, "steps_per_level": steps_per_level, "step_ratio": step_ratio,
      "num_chains": num_chains, "weights": WEIGHTS, "means": MEANS, "stds": STDS,
      "shown_chains": shown,
      "trajectories": np.asarray(path)[:, shown].transpose(1, 0, 2),   # (shown, steps + 1, 2)
      "level_ends": np.asarray(path)[::steps_per_level, shown].transpose(1, 0, 2),
      "endpoints": final, "nearest_mode": nearest,
      "near_mode_fraction": float(near.mean()),
      "mode_frequencies": np.bincount(nearest, minlength=len(WEIGHTS)) / len(final),
      "energy_distance": float(distances.energy_distance(jnp.asarray(final), reference)),
      "energy_distance_floor": float(distances.energy_distance(
          gmm.sample(jax.random.fold_in(key, 2), mix, num_chains), reference)),
      "contour_x": xs, "contour_y": ys, "log_p": log_p,
  }


def plot(path: str, data: dict) -> str:
  """Left: trajectories over log p contours; right: endpoints coloured by their nearest mode."""
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharex=True, sharey=True)
  for ax in axes:
    ax.contour(data["contour_x"], data["contour_y"], np.maximum(data["log_p"], -12.0), levels=8,
               cmap="Greys", linewidths=0.6)
    ax.set_aspect("equal")
  ax = axes[0]
  colors = plt.cm.tab10(np.arange(len(data["trajectories"])) % 10)
  for traj, ends, color in zip(data["trajectories"], data["level_ends"], colors):
    faint = traj[::max(1, len(traj) // 200)]   # ~200 points of the path keep the PNG small
    ax.plot(faint[:, 0], faint[:, 1], "-", color=color, lw=0.3, alpha=0.35)
    ax.plot(ends[:, 0], ends[:, 1], ".-", color=color, lw=1.2, ms=4)
    ax.plot(traj[0, 0], traj[0, 1], "o", color=color, ms=5, mfc="none")
    ax.plot(traj[-1, 0], traj[-1, 1], "*", color=color, ms=10, mec="k", mew=0.4)
  s = data["sigmas"]
  ax.set(title=f"{len(data['trajectories'])} chains (faint: the path; bold: end of each level), "
               f"{len(s)} levels s = {s[0]:g}..{s[-1]:g}, {data['steps_per_level']} steps each")
  ax.title.set_fontsize(8)
  ax = axes[1]
  end, mode = data["endpoints"][:2000], data["nearest_mode"][:2000]   # 2000 shown
  ax.scatter(end[:, 0], end[:, 1], c=mode, cmap="tab10", vmin=0, vmax=9, s=2, alpha=0.6)
  freq = ", ".join(f"{f:.2f}" for f in data["mode_frequencies"])
  ax.set(title=f"{len(end)} of {data['num_chains']} endpoints; mode frequencies {freq} "
               f"(weights {', '.join(map(str, data['weights']))})")
  ax.title.set_fontsize(8)
  ax.set_xlim(data["contour_x"][0], data["contour_x"][-1])
  ax.set_ylim(data["contour_y"][0], data["contour_y"][-1])
  near = 100 * data["near_mode_fraction"]
  fig.suptitle(f"annealed Langevin dynamics on the exact score; {near:.1f}% of endpoints "
               f"within 3 std of a mode", fontsize=9)
  return common.save_figure(fig, path)


def run(out_dir: str, *, quick: bool) -> dict:
  """Compute and draw the figure into out_dir/langevin.{png,json}; returns a summary."""
  settings = (dict(num_chains=1000, num_shown=4, num_levels=8, steps_per_level=40) if quick else
              dict(num_chains=4000, num_shown=4, num_levels=10, steps_per_level=100))
  data = run_chains(jax.random.key(0), **settings)
  outputs = common.write_outputs(out_dir, NAME, data, lambda png: plot(png, data))
  return {**outputs, "near_mode_fraction": data["near_mode_fraction"],
          "mode_frequencies": data["mode_frequencies"].tolist(),
          "energy_distance": data["energy_distance"],
          "energy_distance_floor": data["energy_distance_floor"]}
