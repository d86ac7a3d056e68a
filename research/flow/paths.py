"""Conditional flow-matching probability paths and minibatch couplings.

Time convention (flow matching, this whole module): t = 0 is noise, t = 1 is
data. x0 ~ N(0, I) is the noise sample, x1 the data sample, eps ~ N(0, I) an
extra Gaussian used only by paths with a noise floor.

A path is a pair of pure functions over one example pair (x0, x1):

    x_t = sample_xt(x0, x1, t, eps)          a draw from p_t(x | x0, x1)
    u_t = target(x0, x1, t, eps, x_t)        the conditional velocity u_t(x_t | x0, x1)

and conditional flow matching regresses a network v(x_t, t) on u_t.

Paths (formulas: docs/math.md, "Flow matching"):

* "icfm"    (Tong et al. 2023, I-CFM; sigma = 0 is the rectified-flow /
             stochastic-interpolant line of Liu et al. 2023 and Albergo &
             Vanden-Eijnden 2023):
             x_t = t x1 + (1 - t) x0 + sigma eps,   u_t = x1 - x0.
* "lipman"  (Lipman et al. 2023, the OT conditional path with sigma_min):
             mu_t = t x1, sigma_t = 1 - (1 - sigma_min) t, x_t = mu_t + sigma_t x0,
             u_t = (x1 - (1 - sigma_min) x_t) / (1 - (1 - sigma_min) t).
* "vp"      (variance-preserving trigonometric interpolant; Albergo &
             Vanden-Eijnden 2023, Lipman et al. 2023 sec. 4.1 in flow time):
             x_t = cos(pi t / 2) x0 + sin(pi t / 2) x1,
             u_t = pi / 2 (cos(pi t / 2) x1 - sin(pi t / 2) x0).

Couplings decide which x0 travels to which x1 within a minibatch:

* "independent": the pairs as given (x0 and x1 drawn independently).
* "ot": the exact minibatch optimal-transport permutation for the squared
  Euclidean cost over all non-batch axes (OT-CFM, Tong et al. 2023;
  Pooladian et al. 2023), solved with `optax.assignment.hungarian_algorithm`
  (pure JAX, jittable, O(B^3)). x0 is kept, x1 is reordered.

Shapes: x0, x1, eps share one shape (B, ...) of any rank (vectors (B, d),
images (B, H, W, C)); t has shape (B,) (one time per example) or () and is
broadcast over the non-batch axes. Everything is pure and jittable; dtypes
follow the inputs (float32 in this codebase).
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "ProbabilityPath",
    "PATHS",
    "get_path",
    "icfm_sample_xt",
    "icfm_target",
    "lipman_sample_xt",
    "lipman_target",
    "vp_sample_xt",
    "vp_target",
    "COUPLINGS",
    "independent_coupling",
    "ot_coupling",
    "couple",
    "pairwise_sq_dists",
]


# ----------------------------------------------------------------------------
# Shape helpers.
# ----------------------------------------------------------------------------
def _check_pair(x0, x1, names=("x0", "x1")):
  """Refuse arrays of different shapes or without a batch axis."""
  if x0.shape != x1.shape:
    raise ValueError(
        f"{names[0]} and {names[1]} must have the same shape, got "
        f"{names[0]}.shape={x0.shape} and {names[1]}.shape={x1.shape}")
  if x0.ndim < 1:
    raise ValueError(
        f"{names[0]} must have a leading batch axis, got shape {x0.shape}")


def _expand_time(t, x):
  """Broadcast t of shape (B,) or () over the non-batch axes of x (B, ...)."""
  t = jnp.asarray(t, dtype=x.dtype)
  if t.ndim == 0:
    return t
  if t.ndim != 1 or t.shape[0] != x.shape[0]:
    raise ValueError(
        f"t must have shape () or (batch,) = ({x.shape[0]},), got t.shape="
        f"{t.shape} for x.shape={x.shape}")
  return t.reshape(t.shape + (1,) * (x.ndim - 1))


# ----------------------------------------------------------------------------
# I-CFM (Tong et al. 2023).
# ----------------------------------------------------------------------------
def icfm_sample_xt(x0, x1, t, eps, *, sigma=0.0):
  """Sample of the I-CFM path at time t.

  x_t = t x1 + (1 - t) x0 + sigma eps (Tong et al. 2023, "Improving and
  generalizing flow-based generative models with minibatch optimal transport",
  eq. for I-CFM). sigma = 0 gives the straight line of rectified flow
  (Liu et al. 2023) / the linear stochastic interpolant (Albergo &
  Vanden-Eijnden 2023). t = 0 is noise, t = 1 is data.
  """
  _check_pair(x0, x1)
  tb = _expand_time(t, x0)
  return tb * x1 + (1 - tb) * x0 + sigma * eps


def icfm_target(x0, x1, t, eps, xt):
  """Conditional velocity of the I-CFM path: u_t = x1 - x0 (Tong et al. 2023).

  Independent of t, eps and x_t (the noise floor sigma eps is constant in t).
  """
  del t, eps, xt
  _check_pair(x0, x1)
  return x1 - x0


# ----------------------------------------------------------------------------
# Lipman et al. 2023 (OT conditional path with sigma_min).
# ----------------------------------------------------------------------------
def lipman_sample_xt(x0, x1, t, eps, *, sigma_min=1e-4):
  """Sample of Lipman's conditional OT path: x_t = t x1 + (1 - (1 - sigma_min) t) x0.

  mu_t = t x1, sigma_t = 1 - (1 - sigma_min) t, x_t = mu_t + sigma_t x0, i.e. the
  conditional flow psi_t(x0) (Lipman et al. 2023, "Flow matching for generative
  modeling", eq. 20-22). eps is unused (the noise is x0 itself).
  """
  del eps
  _check_pair(x0, x1)
  tb = _expand_time(t, x0)
  return tb * x1 + (1 - (1 - sigma_min) * tb) * x0


def lipman_target(x0, x1, t, eps, xt, *, sigma_min=1e-4):
  """Conditional velocity of Lipman's path at x_t.

  u_t(x | x1) = (x1 - (1 - sigma_min) x) / (1 - (1 - sigma_min) t)
  (Lipman et al. 2023, eq. 21). On the path, x = psi_t(x0), it equals
  d/dt psi_t(x0) = x1 - (1 - sigma_min) x0. The denominator is >= sigma_min,
  so sigma_min > 0 keeps it finite at t = 1.
  """
  del x0, eps
  _check_pair(x1, xt, names=("x1", "xt"))
  tb = _expand_time(t, xt)
  return (x1 - (1 - sigma_min) * xt) / (1 - (1 - sigma_min) * tb)


# ----------------------------------------------------------------------------
# Variance-preserving trigonometric path.
# ----------------------------------------------------------------------------
def vp_sample_xt(x0, x1, t, eps):
  """Sample of the VP (trigonometric) path: x_t = cos(pi t/2) x0 + sin(pi t/2) x1.

  alpha_t^2 + sigma_t^2 = 1 for all t (Albergo & Vanden-Eijnden 2023,
  trigonometric interpolant; the VP path of Lipman et al. 2023 written in
  flow time, t = 0 noise, t = 1 data). eps is unused.
  """
  del eps
  _check_pair(x0, x1)
  tb = _expand_time(t, x0)
  angle = (math.pi / 2) * tb
  return jnp.cos(angle) * x0 + jnp.sin(angle) * x1


def vp_target(x0, x1, t, eps, xt):
  """Conditional velocity of the VP path: u_t = pi/2 (cos(pi t/2) x1 - sin(pi t/2) x0).

  The time derivative of vp_sample_xt (Albergo & Vanden-Eijnden 2023).
  """
  del eps, xt
  _check_pair(x0, x1)
  tb = _expand_time(t, x0)
  angle = (math.pi / 2) * tb
  return (math.pi / 2) * (jnp.cos(angle) * x1 - jnp.sin(angle) * x0)


# ----------------------------------------------------------------------------
# Registry.
# ----------------------------------------------------------------------------
class ProbabilityPath(NamedTuple):
  """A conditional probability path with its parameters bound.

  sample_xt(x0, x1, t, eps) -> x_t and target(x0, x1, t, eps, xt) -> u_t, with
  t = 0 noise and t = 1 data. Build one with `get_path(name, **params)`.
  """
  name: str
  params: dict
  sample_xt: Callable
  target: Callable

  def interpolate(self, x0, x1, t, eps):
    """(x_t, u_t) of this path: x_t = sample_xt(x0, x1, t, eps), u_t = target(..., x_t)."""
    xt = self.sample_xt(x0, x1, t, eps)
    return xt, self.target(x0, x1, t, eps, xt)


def _check_sigma(sigma):
  """Refuse a negative (or non-finite) I-CFM noise floor."""
  sigma = float(sigma)
  if not (math.isfinite(sigma) and sigma >= 0):
    raise ValueError(f"sigma must be a finite float >= 0, got sigma={sigma!r}")
  return sigma


def _check_sigma_min(sigma_min):
  """Refuse a Lipman sigma_min outside [0, 1)."""
  sigma_min = float(sigma_min)
  if not (0 <= sigma_min < 1):
    raise ValueError(
        f"sigma_min must lie in [0, 1), got sigma_min={sigma_min!r}")
  return sigma_min


class _PathSpec(NamedTuple):
  """Registry entry: defaults, validators and which function takes which param."""
  defaults: dict
  validators: dict
  sample_xt: Callable
  sample_params: tuple
  target: Callable
  target_params: tuple


_PATH_SPECS = {
    "icfm": _PathSpec({"sigma": 0.0}, {"sigma": _check_sigma},
                      icfm_sample_xt, ("sigma",), icfm_target, ()),
    "lipman": _PathSpec({"sigma_min": 1e-4}, {"sigma_min": _check_sigma_min},
                        lipman_sample_xt, ("sigma_min",),
                        lipman_target, ("sigma_min",)),
    "vp": _PathSpec({}, {}, vp_sample_xt, (), vp_target, ()),
}
PATHS = tuple(_PATH_SPECS)


def get_path(name, **params):
  """The probability path `name` with its parameters validated and bound.

  Paths: "icfm" (sigma >= 0, default 0; Tong et al. 2023), "lipman"
  (sigma_min in [0, 1), default 1e-4; Lipman et al. 2023), "vp" (no
  parameters; Albergo & Vanden-Eijnden 2023). Formulas in the module docstring.
  Raises ValueError for an unknown name, a parameter the path does not take,
  or a parameter value out of range.
  """
  if name not in _PATH_SPECS:
    raise ValueError(f"unknown path {name!r}; valid paths: {list(PATHS)}")
  spec = _PATH_SPECS[name]
  unknown = sorted(set(params) - set(spec.defaults))
  if unknown:
    raise ValueError(
        f"path {name!r} takes no parameter(s) {unknown}; it takes "
        f"{sorted(spec.defaults) or 'none'}")
  bound = {k: spec.validators[k](params.get(k, default))
           for k, default in spec.defaults.items()}
  return ProbabilityPath(
      name=name,
      params=bound,
      sample_xt=functools.partial(
          spec.sample_xt, **{k: bound[k] for k in spec.sample_params}),
      target=functools.partial(
          spec.target, **{k: bound[k] for k in spec.target_params}),
  )


# ----------------------------------------------------------------------------
# Couplings.
# ----------------------------------------------------------------------------
def pairwise_sq_dists(a, b):
  """Squared Euclidean distances C_ij = ||a_i - b_j||^2 over all non-batch axes.

  Computed as ||a_i||^2 + ||b_j||^2 - 2 <a_i, b_j> (memory O(B^2), not
  O(B^2 D)), with the inner products at full float32 precision and the result
  clipped at 0 against cancellation.
  """
  _check_pair(a, b, names=("a", "b"))
  a = a.reshape(a.shape[0], -1)
  b = b.reshape(b.shape[0], -1)
  sq_a = jnp.sum(a * a, axis=1)
  sq_b = jnp.sum(b * b, axis=1)
  cross = jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.maximum(sq_a[:, None] + sq_b[None, :] - 2 * cross, 0)


def independent_coupling(x0, x1):
  """Independent coupling pi(x0, x1) = q0(x0) q1(x1): the pairs as given (I-CFM).

  Tong et al. 2023. Returns (x0, x1) unchanged.
  """
  _check_pair(x0, x1)
  return x0, x1


def ot_coupling(x0, x1):
  """Exact minibatch OT coupling: keep x0, reorder x1 by the optimal permutation.

  perm = argmin_{perm} sum_i ||x0_i - x1_{perm(i)}||^2 over all non-batch axes,
  solved exactly by the Hungarian algorithm (`optax.assignment`), which for
  equal batches is the exact discrete W2 plan (OT-CFM, Tong et al. 2023;
  Pooladian et al. 2023). Returns (x0, x1[perm]). Pure JAX and jittable; cost
  O(B^3) per call. No gradient flows through the choice of perm.
  """
  _check_pair(x0, x1)
  cost = jax.lax.stop_gradient(pairwise_sq_dists(x0, x1))
  rows, cols = optax.assignment.hungarian_algorithm(cost)
  # rows is a permutation of 0..B-1 (not sorted): row rows[k] goes to cols[k].
  perm = jnp.zeros(x0.shape[0], dtype=cols.dtype).at[rows].set(cols)
  return x0, x1[perm]


_COUPLINGS = {"independent": independent_coupling, "ot": ot_coupling}
COUPLINGS = tuple(_COUPLINGS)


def couple(name, key, x0, x1):
  """Pair noise x0 with data x1 by the coupling `name`: "independent" or "ot".

  "independent": (x0, x1) as given (Tong et al. 2023, I-CFM); "ot": exact
  minibatch OT permutation of x1 (Tong et al. 2023, OT-CFM). `key` is taken for
  a uniform interface with stochastic couplings; both current couplings are
  deterministic and ignore it. Raises ValueError for an unknown name.
  """
  del key
  if name not in _COUPLINGS:
    raise ValueError(
        f"unknown coupling {name!r}; valid couplings: {list(COUPLINGS)}")
  return _COUPLINGS[name](x0, x1)
