"""Image tiling and the PNG writers of experiments.plotting."""

import numpy as np

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


def test_image_grid_and_scatter_write_pngs(tmp_path):
  path = plotting.image_grid(str(tmp_path / "g.png"), np.random.default_rng(0).random((6, 8, 8, 1)),
                             title="t", columns=3)
  assert open(path, "rb").read(4) == b"\x89PNG"
  path = plotting.scatter_samples(str(tmp_path / "s.png"), np.zeros((10, 2)), np.ones((10, 2)))
  assert open(path, "rb").read(4) == b"\x89PNG"
