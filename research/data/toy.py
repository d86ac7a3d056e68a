"""2-D toy distributions: `sample(name, key, n) -> (n, 2)` float32 points.

Each distribution is a pure, jittable function of a PRNG key (jit with `name`
and `n` static: `jax.jit(sample, static_argnums=(0, 2))`). Points are i.i.d.:
the part a point belongs to (mode, moon, circle, arm, spiral, square) is drawn
per point, never by splitting the batch in order. All sets are scaled to a
"unit-ish" range (roughly [-3, 3]^2, per-coordinate std ~1-1.5); the shapes follow
the toy sets of FFJORD (Grathwohl et al. 2019) and TorchCFM (Tong et al. 2023),
with our own scalings where theirs are larger than that.

Definitions (u ~ U(0, 1), z ~ N(0, I_2), k a uniform label; all constants are
module-level below):

| name         | definition                                                                  |
|--------------|-----------------------------------------------------------------------------|
| ring8        | 8 Gaussians, mu_k = 2 (cos(2 pi k/8), sin(2 pi k/8)), std 0.1, equal weights |
| grid25       | 25 Gaussians, mu in {-2,-1,0,1,2}^2 (spacing 1), std 0.05, equal weights     |
| moons        | 2 (m - (0.5, 0.25)) + 0.2 z; m = (cos a, sin a) or (1 - cos a, 0.5 - sin a),  |
|              | a = pi u, moon chosen with prob 1/2 (sklearn make_moons, centred, x2)       |
| swissroll    | (t cos t, t sin t) / 5 + 0.2 z, t = 1.5 pi (1 + 2u)  (make_swiss_roll, /5)   |
| checkerboard | uniform on the 8 "black" unit squares of [-2, 2]^2, those with               |
|              | floor(x) + floor(y) even (FFJORD's board at half its scale)                 |
| circles      | radius 2 or 1 (prob 1/2 each), angle 2 pi u, plus 0.08 z                     |
| pinwheel     | 5 arms: r ~ N(1, 0.3^2), q ~ N(0, 0.1^2), angle = 2 pi k/5 + 0.25 exp(r),    |
|              | x = 2 R(angle) (r, q)  (FFJORD pinwheel)                                    |
| spirals      | s = 3 pi sqrt(u), c = (-s cos s, s sin s) + 0.5 (u1, u2); x = +-c / 3 + 0.1 z |
|              | with the sign (spiral) drawn with prob 1/2  (FFJORD 2spirals)               |

`mixture(name)` returns the exact `gmm.GaussianMixture` for the Gaussian
mixtures (ring8, grid25): densities, scores and the mode centres for coverage
metrics.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from research.data import gmm as gmm_lib

__all__ = ["NAMES", "MIXTURE_NAMES", "sample", "mixture"]

# ring8: 8 equal Gaussians on a circle.
RING8_NUM_MODES = 8
RING8_RADIUS = 2.0
RING8_STD = 0.1
# grid25: 5 x 5 equal Gaussians on a centred grid.
GRID25_NUM_PER_SIDE = 5
GRID25_SPACING = 1.0
GRID25_STD = 0.05
# moons: sklearn make_moons geometry, centred and scaled.
MOONS_NOISE = 0.1          # std before scaling (0.2 after)
MOONS_CENTRE = (0.5, 0.25)
MOONS_SCALE = 2.0
# swissroll: sklearn make_swiss_roll (x, z) plane, divided by 5.
SWISSROLL_SCALE = 0.2
SWISSROLL_NOISE = 0.2      # std after scaling
# checkerboard: [-2, 2]^2, unit squares, black where floor(x) + floor(y) is even.
CHECKERBOARD_HALF_WIDTH = 2
# circles: two concentric circles.
CIRCLES_RADII = (2.0, 1.0)
CIRCLES_NOISE = 0.08
# pinwheel (FFJORD).
PINWHEEL_NUM_ARMS = 5
PINWHEEL_RADIAL_STD = 0.3
PINWHEEL_TANGENTIAL_STD = 0.1
PINWHEEL_RATE = 0.25
PINWHEEL_SCALE = 2.0
# spirals (FFJORD 2spirals).
SPIRALS_MAX_ANGLE = 3 * math.pi   # 540 degrees
SPIRALS_JITTER = 0.5              # uniform jitter before scaling
SPIRALS_SCALE = 1.0 / 3.0
SPIRALS_NOISE = 0.1               # std after scaling


def _ring8(key, n):
  return gmm_lib.sample(key, mixture("ring8"), n)


def _grid25(key, n):
  return gmm_lib.sample(key, mixture("grid25"), n)


def _moons(key, n):
  key_a, key_m, key_z = jax.random.split(key, 3)
  a = math.pi * jax.random.uniform(key_a, (n,))
  lower = jax.random.bernoulli(key_m, 0.5, (n,))
  upper_pt = jnp.stack([jnp.cos(a), jnp.sin(a)], axis=-1)
  lower_pt = jnp.stack([1.0 - jnp.cos(a), 0.5 - jnp.sin(a)], axis=-1)
  m = jnp.where(lower[:, None], lower_pt, upper_pt)
  m = m + MOONS_NOISE * jax.random.normal(key_z, (n, 2))
  return MOONS_SCALE * (m - jnp.asarray(MOONS_CENTRE))


def _swissroll(key, n):
  key_t, key_z = jax.random.split(key)
  t = 1.5 * math.pi * (1.0 + 2.0 * jax.random.uniform(key_t, (n,)))
  x = SWISSROLL_SCALE * jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], axis=-1)
  return x + SWISSROLL_NOISE * jax.random.normal(key_z, (n, 2))


def _checkerboard(key, n):
  key_c, key_u = jax.random.split(key)
  w = CHECKERBOARD_HALF_WIDTH
  side = 2 * w
  # Enumerate the black cells (floor(x) + floor(y) even) and pick one uniformly.
  cells = np.array([(i, j) for i in range(-w, w) for j in range(-w, w)
                    if (i + j) % 2 == 0], dtype=np.float32)
  assert cells.shape[0] == side * side // 2
  idx = jax.random.randint(key_c, (n,), 0, cells.shape[0])
  return jnp.asarray(cells)[idx] + jax.random.uniform(key_u, (n, 2))


def _circles(key, n):
  key_r, key_a, key_z = jax.random.split(key, 3)
  outer = jax.random.bernoulli(key_r, 0.5, (n,))
  radius = jnp.where(outer, CIRCLES_RADII[0], CIRCLES_RADII[1])
  a = 2 * math.pi * jax.random.uniform(key_a, (n,))
  x = radius[:, None] * jnp.stack([jnp.cos(a), jnp.sin(a)], axis=-1)
  return x + CIRCLES_NOISE * jax.random.normal(key_z, (n, 2))


def _pinwheel(key, n):
  key_k, key_z = jax.random.split(key)
  arm = jax.random.randint(key_k, (n,), 0, PINWHEEL_NUM_ARMS)
  z = jax.random.normal(key_z, (n, 2))
  r = 1.0 + PINWHEEL_RADIAL_STD * z[:, 0]
  q = PINWHEEL_TANGENTIAL_STD * z[:, 1]
  angle = 2 * math.pi * arm / PINWHEEL_NUM_ARMS + PINWHEEL_RATE * jnp.exp(r)
  c, s = jnp.cos(angle), jnp.sin(angle)
  # Rotation R(angle) applied to (r, q).
  return PINWHEEL_SCALE * jnp.stack([c * r - s * q, s * r + c * q], axis=-1)


def _spirals(key, n):
  key_u, key_j, key_s, key_z = jax.random.split(key, 4)
  s = SPIRALS_MAX_ANGLE * jnp.sqrt(jax.random.uniform(key_u, (n,)))
  c = jnp.stack([-s * jnp.cos(s), s * jnp.sin(s)], axis=-1)
  c = c + SPIRALS_JITTER * jax.random.uniform(key_j, (n, 2))
  sign = jnp.where(jax.random.bernoulli(key_s, 0.5, (n,)), -1.0, 1.0)
  x = SPIRALS_SCALE * sign[:, None] * c
  return x + SPIRALS_NOISE * jax.random.normal(key_z, (n, 2))


_SAMPLERS = {
    "ring8": _ring8,
    "grid25": _grid25,
    "moons": _moons,
    "swissroll": _swissroll,
    "checkerboard": _checkerboard,
    "circles": _circles,
    "pinwheel": _pinwheel,
    "spirals": _spirals,
}

NAMES = tuple(_SAMPLERS)
MIXTURE_NAMES = ("ring8", "grid25")


def _check_name(name):
  if name not in _SAMPLERS:
    raise ValueError(f"name must be one of {NAMES}, got {name!r}.")


def sample(name: str, key, n: int):
  """Draws n i.i.d. points from the 2-D toy distribution `name`.

  The distributions and their constants are defined in the module docstring
  table (shapes after FFJORD, Grathwohl et al. 2019, and TorchCFM, Tong et al.
  2023). Pure and jittable with `name` and `n` static:
  `jax.jit(sample, static_argnums=(0, 2))(name, key, n)`.

  Args:
    name: one of `NAMES`.
    key: PRNG key (the only source of randomness).
    n: number of points, a Python int >= 1.

  Returns:
    float32 array of shape (n, 2).
  """
  _check_name(name)
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f"n must be a Python int >= 1, got n={n!r}.")
  return _SAMPLERS[name](key, int(n)).astype(jnp.float32)


def mixture(name: str) -> gmm_lib.GaussianMixture:
  """The exact Gaussian mixture behind a mixture toy set (ring8 or grid25).

  ring8  = gmm.ring(8, radius=2.0, std=0.1):
           mu_k = 2 (cos(2 pi k / 8), sin(2 pi k / 8)), w_k = 1/8.
  grid25 = gmm.grid(5, spacing=1.0, std=0.05): mu in {-2, -1, 0, 1, 2}^2, w = 1/25.
  `mixture(name).means` are the mode centres used by mode-coverage metrics.
  """
  _check_name(name)
  if name == "ring8":
    return gmm_lib.ring(RING8_NUM_MODES, RING8_RADIUS, RING8_STD)
  if name == "grid25":
    return gmm_lib.grid(GRID25_NUM_PER_SIDE, GRID25_SPACING, GRID25_STD)
  raise ValueError(
      f"name must be a Gaussian-mixture toy set, one of {MIXTURE_NAMES}, got"
      f" {name!r} (it has no analytic mixture).")


def reference_density(name: str, axis, *, num_points: int = 1_000_000, key=None) -> np.ndarray:
  """The true density of toy `name` on the grid axis x axis (row i: y = axis[i]).

  Exact for the mixtures (ring8, grid25); for the other toys a normalised 2-D histogram
  of `num_points` draws (default key: key(0)) with one cell centred on each grid point.
  axis: an evenly spaced 1-D array. Returns float64 (len(axis), len(axis)).
  """
  _check_name(name)
  axis = np.asarray(axis, np.float64)
  if axis.ndim != 1 or axis.size < 2:
    raise ValueError(f"axis must be a 1-D array of >= 2 grid values, got shape {axis.shape}")
  size = axis.size
  if name in MIXTURE_NAMES:
    from research.data import gmm_entropy
    xx, yy = np.meshgrid(axis, axis)
    grid = np.stack([xx.ravel(), yy.ravel()], -1)
    return np.exp(gmm_entropy.log_prob_np(mixture(name), grid)).reshape(size, size)
  key = jax.random.key(0) if key is None else key
  points = np.asarray(jax.jit(sample, static_argnums=(0, 2))(name, key, num_points))
  half = (axis[1] - axis[0]) / 2
  edges = np.linspace(axis[0] - half, axis[-1] + half, size + 1)
  density, _, _ = np.histogram2d(points[:, 1], points[:, 0], bins=(edges, edges), density=True)
  return density

