"""Image tiling and the PNG writers of experiments.plotting."""

import numpy as np
import pytest

from experiments import plotting


def test_tile_images_places_each_image_row_major_between_white_lines():
  images = np.stack([np.full((2, 3, 1), v / 10) for v in range(5)])    # 5 images, 2x3
  canvas = plotting.tile_images(images, columns=2)
  assert canvas.shape == (3 * 3 + 1, 2 * 4 + 1, 1)                      # 3 rows, 2 columns
  for i in range(5):
    r, c = divmod(i, 2)
    np.testing.assert_allclose(canvas[1 + 3 * r: 3 + 3 * r, 1 + 4 * c: 4 + 4 * c], i / 10, rtol=1e-6)
  np.testing.assert_array_equal(canvas[0], 1.0)                          # separator lines
  np.testing.assert_array_equal(canvas[:, 4], 1.0)
  np.testing.assert_array_equal(canvas[7:, 5:], 1.0)                     # the empty slot
  assert plotting.tile_images(np.full((1, 2, 2, 1), 7.0), 1).max() == 1.0   # clipped to [0, 1]


def test_tile_images_without_border_pads_and_squeezes_grey_images():
  # the layout of 2-D grey canvases: (rows (h+1) - 1, cols (w+1) - 1), gaps and empty slots = pad
  images = np.arange(3 * 2 * 2, dtype=np.float32).reshape(3, 2, 2, 1) / 20
  canvas = plotting.tile_images(images, 2, pad=0.0, border=False, squeeze=True)
  assert canvas.shape == (2 * 3 - 1, 2 * 3 - 1)
  np.testing.assert_allclose(canvas[0:2, 0:2], images[0, ..., 0])
  np.testing.assert_allclose(canvas[0:2, 3:5], images[1, ..., 0])
  np.testing.assert_allclose(canvas[3:5, 0:2], images[2, ..., 0])
  np.testing.assert_array_equal(canvas[2], 0.0)                          # the gap row
  np.testing.assert_array_equal(canvas[3:, 3:], 0.0)                     # the empty slot
  grey = plotting.tile_images(images[..., 0], 2, pad=0.25, border=False)   # (N, H, W) input
  assert grey.shape == canvas.shape and grey[2, 0] == 0.25
  colour = plotting.tile_images(np.full((2, 2, 2, 3), 2.0), 2, squeeze=True, clip=False)
  assert colour.shape == (4, 7, 3) and colour.max() == 2.0              # C = 3 kept, not clipped


def test_tile_images_rejects_bad_arguments():
  with pytest.raises(ValueError, match="images"):
    plotting.tile_images(np.zeros((2, 2)), 1)
  with pytest.raises(ValueError, match="images"):
    plotting.tile_images(np.zeros((0, 2, 2, 1)), 1)
  for columns in (0, 1.5, True):
    with pytest.raises(ValueError, match="columns"):
      plotting.tile_images(np.zeros((2, 2, 2, 1)), columns)


def test_image_grid_and_scatter_write_pngs(tmp_path):
  path = plotting.image_grid(str(tmp_path / "g.png"), np.random.default_rng(0).random((6, 8, 8, 1)),
                             title="t", columns=3)
  assert open(path, "rb").read(4) == b"\x89PNG"
  path = plotting.image_grid(str(tmp_path / "h.png"), np.zeros((3, 8, 8)), columns=2)   # no C axis
  assert open(path, "rb").read(4) == b"\x89PNG"
  path = plotting.scatter_samples(str(tmp_path / "s.png"), np.zeros((10, 2)), np.ones((10, 2)))
  assert open(path, "rb").read(4) == b"\x89PNG"
