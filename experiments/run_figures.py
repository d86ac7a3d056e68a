"""Figures a run writes into its workdir: the sample plot and the families' own figures.

The families compute what to draw (numpy arrays) and call these; the drawing
goes through experiments/plotting.py (scatter_samples, image_grid, tile_images)
with matplotlib's Agg backend. Every function writes one PNG and returns its path.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments import plotting  # noqa: E402


def sample_plot(path: str, samples, *, reference=None, to_unit=None, title: str = "") -> str | None:
  """2-D samples: a scatter beside `reference` data; (N, H, W, C) images: a grid of the first 64
  (mapped to [0, 1] by `to_unit`); anything else: no plot (None)."""
  samples = np.asarray(samples)
  if samples.ndim == 2 and samples.shape[1] == 2:
    return plotting.scatter_samples(path, samples, reference, title=title)
  if samples.ndim == 4 and to_unit is not None:
    return plotting.image_grid(path, np.asarray(to_unit(samples[:64])), title=title)
  return None


def _save(fig, path: str, title: str) -> str:
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def _show(ax, canvas: np.ndarray) -> None:
  """Grey canvases dark ink on white (gray_r, [0, 1]); colour canvases as RGB."""
  if canvas.ndim == 2:
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=1)
  else:
    ax.imshow(np.clip(canvas, 0.0, 1.0))
  ax.axis("off")


def panels(path: str, named_points, *, title: str = "") -> str:
  """Side-by-side 2-D scatter panels [(panel title, (N, 2) points), ...] with shared axes."""
  fig, axes = plt.subplots(1, len(named_points), figsize=(4 * len(named_points), 4),
                           sharex=True, sharey=True, squeeze=False)
  for ax, (name, pts) in zip(axes[0], named_points):
    pts = np.asarray(pts)
    ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5)
    ax.set_title(name)
    ax.set_aspect("equal")
  return _save(fig, path, title)


def image_canvas(path: str, images, columns: int, *, title: str = "") -> str:
  """Images in [0, 1] tiled with dark 1-pixel gaps (grey: dark ink on white), no border."""
  canvas = plotting.tile_images(images, columns, pad=0.0, border=False, squeeze=True, clip=False)
  fig, ax = plt.subplots(figsize=(6, 6))
  _show(ax, canvas)
  return _save(fig, path, title)


def latent_scatter(path: str, mu, labels, *, title: str = "") -> str:
  """Posterior means of a 2-D latent coloured by digit label."""
  mu, labels = np.asarray(mu), np.asarray(labels)
  fig, ax = plt.subplots(figsize=(6.5, 5.5))
  points = ax.scatter(mu[:, 0], mu[:, 1], c=labels, cmap="tab10", vmin=-0.5, vmax=9.5, s=12)
  fig.colorbar(points, ax=ax, ticks=range(10), label="digit")
  ax.set_xlabel("z1 (posterior mean)")
  ax.set_ylabel("z2 (posterior mean)")
  return _save(fig, path, title)


def mode_coverage(path: str, x, means, stds, hq_counts, min_hq_count: float, *,
                  num_std: float, title: str = "") -> str:
  """Samples coloured by nearest mode (grey when not within num_std of it), one disc per mode
  (black: hit, at least min_hq_count high-quality samples; red: missed)."""
  x, means, stds = np.asarray(x), np.asarray(means), np.asarray(stds)
  d2 = ((x[:, None] - means[None]) ** 2).sum(-1)
  nearest = d2.argmin(1)
  hq = np.sqrt(d2.min(1)) <= num_std * stds[nearest]
  fig, ax = plt.subplots(figsize=(5, 5))
  ax.scatter(x[~hq, 0], x[~hq, 1], s=2, c="lightgray", label="not HQ")
  ax.scatter(x[hq, 0], x[hq, 1], s=2, c=nearest[hq], cmap="tab20", label="HQ")
  for k, (mu, s) in enumerate(zip(means, stds)):
    hit = hq_counts[k] >= min_hq_count
    ax.add_patch(plt.Circle(mu, num_std * s, fill=False, lw=1, color="k" if hit else "r"))
  ax.set_aspect("equal")
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def density_panels(path: str, named_densities, extent, *, title: str = "") -> str:
  """Side-by-side heat maps [(panel title, (n, n) density on the grid), ...] over
  extent = (low, high) on both axes (row 0 of each array is y = low)."""
  fig, axes = plt.subplots(1, len(named_densities), figsize=(4 * len(named_densities), 4),
                           squeeze=False)
  low, high = extent
  for ax, (name, density) in zip(axes[0], named_densities):
    ax.imshow(np.asarray(density), origin="lower", extent=(low, high, low, high), cmap="magma",
              interpolation="nearest")
    ax.set_title(name)
    ax.set_xticks([])
    ax.set_yticks([])
  return _save(fig, path, title)
