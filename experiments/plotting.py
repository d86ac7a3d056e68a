"""Figures written by runs: 2-D sample scatter plots and image grids (matplotlib, Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def scatter_samples(path: str, samples, reference=None, *, title: str = "") -> str:
  """Scatter model samples (and a reference draw of the data beside them) into a PNG."""
  samples = np.asarray(samples)
  panels = [("model samples", samples)]
  if reference is not None:
    panels.insert(0, ("data", np.asarray(reference)))
  fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
  both = np.concatenate([p for _, p in panels])
  lo, hi = np.percentile(both, 0.5, axis=0), np.percentile(both, 99.5, axis=0)
  pad = 0.1 * (hi - lo)
  for ax, (name, pts) in zip(axes[0], panels):
    ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5)
    ax.set_title(name)
    ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
    ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    ax.set_aspect("equal")
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def tile_images(images, columns: int) -> np.ndarray:
  """(N, H, W, C) images in [0, 1] -> one (rows (H+1) + 1, columns (W+1) + 1, C) canvas,
  row-major, separated by 1-pixel white lines."""
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  n, h, w, c = images.shape
  rows = -(-n // columns)
  canvas = np.ones((rows * (h + 1) + 1, columns * (w + 1) + 1, c), np.float32)
  for i, img in enumerate(images):
    r, col = divmod(i, columns)
    canvas[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + col * (w + 1): 1 + col * (w + 1) + w] = img
  return canvas


def image_grid(path: str, images, *, title: str = "", columns: int = 8) -> str:
  """Tile images (N, H, W, C) with values in [0, 1] into a grid PNG."""
  canvas = tile_images(images, columns)
  rows, c = -(-len(images) // columns), canvas.shape[-1]
  fig, ax = plt.subplots(figsize=(columns * 0.6 + 0.5, rows * 0.6 + 0.7))
  ax.imshow(canvas[..., 0] if c == 1 else canvas, cmap="gray" if c == 1 else None,
            vmin=0.0, vmax=1.0, interpolation="nearest")
  ax.axis("off")
  if title:
    ax.set_title(title, fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
