"""Rational-quadratic splines with linear tails (Durkan et al. 2019, Neural Spline Flows).

On [-B, B] the map is a monotone piecewise rational-quadratic through K + 1 knots
(x^k, y^k), x^0 = y^0 = -B, x^K = y^K = B, with derivatives delta^k > 0 at the knots
(Gregory & Delbourgo 1982). In bin k, with w_k = x^{k+1} - x^k, h_k = y^{k+1} - y^k,
s_k = h_k / w_k and xi = (x - x^k) / w_k in [0, 1] (Durkan et al. 2019, Sec. 3.1):

  y = y^k + h_k [s_k xi^2 + delta^k xi (1 - xi)] / [s_k + t_k xi (1 - xi)],
  dy/dx = s_k^2 [delta^{k+1} xi^2 + 2 s_k xi (1 - xi) + delta^k (1 - xi)^2]
          / [s_k + t_k xi (1 - xi)]^2,   t_k = delta^{k+1} + delta^k - 2 s_k.

Outside [-B, B] the map is linear with the boundary slopes, y = -B + delta^0 (x + B)
below and y = B + delta^K (x - B) above: the identity when delta^0 = delta^K = 1, as
the transformer here always sets them. The inverse solves a xi^2 + b xi + c = 0 with
(Durkan et al. 2019, Appendix A; u = (y - y^k) / h_k)

  a = s_k - delta^k + t_k u,  b = delta^k - t_k u,  c = -s_k u,
  xi = 2c / (-b - sqrt(b^2 - 4ac)),

the cancellation-free form of the quadratic formula's root in [0, 1].

Numerics (the NaN-gradient bug class of flowjax #239 / nflows #23): x is clipped into
the interval and xi into [0, 1] before the formula, and the tail result is selected
with jnp.where, so the unselected spline branch is always evaluated at finite,
in-range values and contributes zero (not NaN) to every gradient. The discriminant
is clamped at the smallest positive normal number, so sqrt's gradient stays finite.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

__all__ = ["rational_quadratic_spline", "knot_positions", "RationalQuadratic"]


def _check_bound(bound) -> float:
  if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not bound > 0:
    raise ValueError(f"bound must be a number > 0 (the spline lives on [-bound, bound]; "
                     f"bound <= 0 puts the interval's bounds in the wrong order), got {bound!r}")
  return float(bound)


def knot_positions(sizes: jax.Array, bound: float) -> jax.Array:
  """Knots -B, -B + s_0, ..., B from K bin sizes summing to 2B along the last axis.

  The end knots are set to exactly -B and B, so rounding in the cumulative sum never
  moves the interval.
  """
  bound = _check_bound(bound)
  inner = -bound + jnp.cumsum(sizes[..., :-1], axis=-1)
  edge = jnp.ones_like(sizes[..., :1])
  return jnp.concatenate([-bound * edge, inner, bound * edge], axis=-1)


def _clip_unit(t):
  """t clipped to [0, 1] with where, so the gradient passes unchanged at exactly 0 and 1."""
  return jnp.where(t < 0, jnp.zeros_like(t), jnp.where(t > 1, jnp.ones_like(t), t))


def _gather(table, index):
  return jnp.take_along_axis(table, index[..., None], axis=-1)[..., 0]


def rational_quadratic_spline(x, widths, heights, derivatives, *, bound, inverse=False):
  """y = g(x) (or x = g^{-1}(y) when inverse) and log|dy/dx| (log|dx/dy|) elementwise.

  x: (...); widths, heights: (..., K) positive bin sizes summing to 2 bound;
  derivatives: (..., K + 1) positive knot derivatives (1 at both ends for identity
  tails). Leading axes broadcast. Returns (y, log_abs_det), both of the broadcast shape.
  See the module docstring for the formulas (Durkan et al. 2019).
  """
  bound = _check_bound(bound)
  x = jnp.asarray(x)
  num_bins = widths.shape[-1]
  if num_bins < 1 or heights.shape[-1] != num_bins:
    raise ValueError(f"widths and heights must have the same number K >= 1 of bins on their "
                     f"last axis, got shapes {widths.shape} and {heights.shape}")
  if derivatives.shape[-1] != num_bins + 1:
    raise ValueError(f"derivatives must have K + 1 = {num_bins + 1} knot derivatives on its "
                     f"last axis, got shape {derivatives.shape}")
  shape = jnp.broadcast_shapes(x.shape, widths.shape[:-1], heights.shape[:-1],
                               derivatives.shape[:-1])
  x = jnp.broadcast_to(x, shape)
  x_knots = jnp.broadcast_to(knot_positions(widths, bound), (*shape, num_bins + 1))
  y_knots = jnp.broadcast_to(knot_positions(heights, bound), (*shape, num_bins + 1))
  derivatives = jnp.broadcast_to(derivatives, (*shape, num_bins + 1))
  in_knots = y_knots if inverse else x_knots

  # The spline branch sees only in-range values and each tail only its own side, so no
  # unselected branch is ever inf or NaN (x = +-inf included); jnp.where picks at the end.
  inside = (x > -bound) & (x < bound)
  x_in = jnp.clip(x, -bound, bound)
  index = jnp.sum(x_in[..., None] >= in_knots[..., 1:-1], axis=-1)  # correct at knots
  x_lo, x_hi = _gather(x_knots, index), _gather(x_knots, index + 1)
  y_lo, y_hi = _gather(y_knots, index), _gather(y_knots, index + 1)
  d_lo, d_hi = _gather(derivatives, index), _gather(derivatives, index + 1)
  width, height = x_hi - x_lo, y_hi - y_lo
  slope = height / width
  curvature = d_hi + d_lo - 2 * slope

  if inverse:
    u = _clip_unit((x_in - y_lo) / height)
    a = slope - d_lo + curvature * u
    b = d_lo - curvature * u
    c = -slope * u
    discriminant = jnp.maximum(b * b - 4 * a * c, jnp.finfo(x_in.dtype).tiny)
    xi = _clip_unit(2 * c / (-b - jnp.sqrt(discriminant)))
  else:
    xi = _clip_unit((x_in - x_lo) / width)
  xi_1m = xi * (1 - xi)
  denominator = slope + curvature * xi_1m
  log_slope = (2 * jnp.log(slope) - 2 * jnp.log(denominator)
               + jnp.log(d_hi * xi ** 2 + 2 * slope * xi_1m + d_lo * (1 - xi) ** 2))

  below_offset = jnp.where(x > -bound, jnp.zeros_like(x), x + bound)  # full slope at x = -B
  above_offset = jnp.where(x < bound, jnp.zeros_like(x), x - bound)
  if inverse:
    spline_out, spline_log_det = x_lo + xi * width, -log_slope
    below = -bound + below_offset / derivatives[..., 0]
    above = bound + above_offset / derivatives[..., -1]
    tail_log_det = -jnp.log(jnp.where(x <= -bound, derivatives[..., 0], derivatives[..., -1]))
  else:
    spline_out = y_lo + height * (slope * xi ** 2 + d_lo * xi_1m) / denominator
    spline_log_det = log_slope
    below = -bound + below_offset * derivatives[..., 0]
    above = bound + above_offset * derivatives[..., -1]
    tail_log_det = jnp.log(jnp.where(x <= -bound, derivatives[..., 0], derivatives[..., -1]))
  tail = jnp.where(x <= -bound, below, above)
  return jnp.where(inside, spline_out, tail), jnp.where(inside, spline_log_det, tail_log_det)


@dataclasses.dataclass(frozen=True)
class RationalQuadratic:
  """The rational-quadratic spline transformer on [-bound, bound], identity outside.

  raw (..., d, 3K - 1) = [K widths | K heights | K - 1 interior derivatives]:
    widths  = 2B [m_w + (1 - K m_w) softmax(raw_w)],  heights likewise with m_h,
    delta^k = m_d + softplus(raw_d + c),  c = log(expm1(1 - m_d)),  delta^0 = delta^K = 1,
  so raw = 0 gives equal bins and unit derivatives: the identity map (Durkan et al. 2019).
  The minimum sizes m_w, m_h are fractions of the interval.
  """
  num_bins: int = 8
  bound: float = 3.0
  min_bin_width: float = 1e-3
  min_bin_height: float = 1e-3
  min_derivative: float = 1e-3

  def __post_init__(self):
    k = self.num_bins
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
      raise ValueError(f"num_bins must be an integer >= 2, got {k!r}")
    _check_bound(self.bound)
    for name in ("min_bin_width", "min_bin_height"):
      value = getattr(self, name)
      if not 0 <= value or not k * value < 1:
        raise ValueError(f"{name} must be >= 0 with num_bins * {name} < 1 (a fraction of the "
                         f"interval per bin), got {value!r} with num_bins={k}")
    if not 0 <= self.min_derivative < 1:
      raise ValueError(f"min_derivative must be in [0, 1) (raw = 0 maps to derivative 1), "
                       f"got {self.min_derivative!r}")

  @property
  def num_params(self) -> int:
    """Raw parameters per dimension: K widths, K heights, K - 1 interior derivatives."""
    return 3 * self.num_bins - 1

  def spline_params(self, raw: jax.Array):
    """(widths, heights, derivatives) of shapes (..., K), (..., K), (..., K + 1) from raw."""
    if raw.shape[-1:] != (self.num_params,):
      raise ValueError(f"raw must end in num_params = 3 * num_bins - 1 = {self.num_params}, "
                       f"got shape {raw.shape}")
    k, span = self.num_bins, 2 * float(self.bound)
    raw_w, raw_h, raw_d = raw[..., :k], raw[..., k:2 * k], raw[..., 2 * k:]
    widths = span * (self.min_bin_width
                     + (1 - k * self.min_bin_width) * jax.nn.softmax(raw_w, axis=-1))
    heights = span * (self.min_bin_height
                      + (1 - k * self.min_bin_height) * jax.nn.softmax(raw_h, axis=-1))
    offset = math.log(math.expm1(1 - self.min_derivative))
    inner = self.min_derivative + jax.nn.softplus(raw_d + offset)
    ones = jnp.ones_like(raw_d[..., :1])
    return widths, heights, jnp.concatenate([ones, inner, ones], axis=-1)

  def forward(self, raw: jax.Array, x: jax.Array):
    """y = g(x; raw) and log|dy/dx|, elementwise over x (..., d) with raw (..., d, 3K - 1)."""
    return rational_quadratic_spline(x, *self.spline_params(raw), bound=self.bound)

  def inverse(self, raw: jax.Array, y: jax.Array):
    """x = g^{-1}(y; raw) and log|dx/dy|, elementwise."""
    return rational_quadratic_spline(y, *self.spline_params(raw), bound=self.bound, inverse=True)
