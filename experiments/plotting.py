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


def tile_images(images, columns: int, *, pad: float = 1.0, border: bool = True,
                clip: bool = True, squeeze: bool = False) -> np.ndarray:
  """Tile images row-major into one canvas with 1-pixel lines of value `pad` between them.

  images: (N, H, W, C) or (N, H, W) (grey, no channel axis); the canvas is
  (rows (H+1) + 1, columns (W+1) + 1[, C]) with rows = ceil(N / columns), or
  (rows (H+1) - 1, columns (W+1) - 1[, C]) without the outer `border` line. Empty
  slots of the last row hold `pad` too. clip: clip the images to [0, 1] first;
  squeeze: drop a single channel axis (C = 1 -> a 2-D canvas). The defaults draw
  white lines around images in [0, 1]; pad=0, border=False, squeeze=True gives the
  dark-on-white (gray_r) layout of 2-D grey canvases.
  """
  images = np.asarray(images, np.float32)
  if images.ndim not in (3, 4):
    raise ValueError(f"images must be (N, H, W) or (N, H, W, C), got shape {images.shape}")
  if images.shape[0] == 0:
    raise ValueError("images must hold at least one image, got N = 0")
  if isinstance(columns, bool) or not isinstance(columns, (int, np.integer)) or columns < 1:
    raise ValueError(f"columns must be an integer >= 1, got {columns!r}")
  if clip:
    images = np.clip(images, 0.0, 1.0)
  if squeeze and images.ndim == 4 and images.shape[-1] == 1:
    images = images[..., 0]
  n, h, w = images.shape[:3]
  rows, edge = -(-n // columns), 1 if border else 0
  canvas = np.full((rows * (h + 1) - 1 + 2 * edge, columns * (w + 1) - 1 + 2 * edge,
                    *images.shape[3:]), pad, np.float32)
  for i, img in enumerate(images):
    r, col = divmod(i, columns)
    top, left = edge + r * (h + 1), edge + col * (w + 1)
    canvas[top: top + h, left: left + w] = img
  return canvas


def image_grid(path: str, images, *, title: str = "", columns: int = 8) -> str:
  """Tile images (N, H, W[, C]) with values in [0, 1] into a grid PNG (grey: white on black)."""
  canvas = tile_images(images, columns, squeeze=True)
  rows, grey = -(-len(images) // columns), canvas.ndim == 2
  fig, ax = plt.subplots(figsize=(columns * 0.6 + 0.5, rows * 0.6 + 0.7))
  ax.imshow(canvas, cmap="gray" if grey else None, vmin=0.0, vmax=1.0, interpolation="nearest")
  ax.axis("off")
  if title:
    ax.set_title(title, fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
