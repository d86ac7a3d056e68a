"""Diffusion noise schedules in continuous time and the choice of sampling steps.

Time convention (this whole module): continuous t in [0, 1], t = 1 is noise,
t = 0 is clean data, and the forward process is

    x_t = alpha(t) x0 + sigma(t) eps,        eps ~ N(0, I),

with log-SNR lambda(t) = log(alpha(t) / sigma(t)), strictly decreasing in t.
Variance-preserving (VP) schedules have alpha^2 + sigma^2 = 1; the
variance-exploding (VE) schedule has alpha = 1.

Discrete DDPM schedules (betas_0..betas_{T-1}, alpha_bar_n = prod_{i<=n}
(1 - beta_i)) are wrapped as continuous time in DPM-Solver's convention (Lu et
al. 2022): t_n = (n + 1) / T for n = 0..T-1, log alpha(t) piecewise linear in t
through the points (t_n, 0.5 log alpha_bar_n) and through (0, 0), so that
sigma(0) = 0 exactly. The network sees the time index T t - 1 (t_n -> n,
`Schedule.model_time`). The smallest trained time is t_min = 1 / T.

Schedules (all return a `Schedule` pytree):

* discrete_vp(betas)   with linear_betas (Ho et al. 2020), scaled_linear_betas
                       (Rombach et al. 2022, Stable Diffusion), cosine_betas
                       (Nichol & Dhariwal 2021).
* continuous_vp        log alpha(t) = -0.25 t^2 (beta_max - beta_min) - 0.5 t beta_min
                       (Song et al. 2021, VP-SDE with beta(t) = beta_min + t (beta_max - beta_min)).
* cosine_vp            alpha(t) = cos(pi/2 (u + s)/(1 + s)) / cos(pi/2 s/(1 + s)), u = max_time t
                       (Nichol & Dhariwal 2021 in continuous time; max_time = 0.9946 is
                       DPM-Solver's truncation that keeps lambda(1) finite).
* ve                   alpha = 1, sigma(t) = sigma_min (sigma_max / sigma_min)^t
                       (Song & Ermon 2019; Song et al. 2021, VE-SDE).

Step selection: `timesteps(schedule, num_steps, spacing)` returns num_steps + 1
decreasing times from t = 1 to t_end (research/diffusion/spacings.py, re-exported here).

All schedule methods are elementwise on t of any shape, pure and jittable; they
compute in float32 (or the dtype of t if wider) with expm1 / log1p / log_sigmoid
where cancellation threatens.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from research.diffusion.spacings import (DISCRETE_SPACINGS, INDEX_RULES, SPACINGS, index_grid,
                                         timesteps)
from research.diffusion.spacings import check_num_train_steps as _check_num_train_steps

__all__ = [
    "Schedule",
    "KINDS",
    "linear_betas",
    "scaled_linear_betas",
    "cosine_betas",
    "discrete_vp",
    "continuous_vp",
    "cosine_vp",
    "ve",
    "SPACINGS",
    "DISCRETE_SPACINGS",
    "INDEX_RULES",
    "timesteps",
    "index_grid",
]

KINDS = ("discrete", "linear_vp", "cosine_vp", "ve")


def _float(t):
  """t as a float array: float32 unless it already is a wider float."""
  t = jnp.asarray(t)
  if not jnp.issubdtype(t.dtype, jnp.floating) or jnp.finfo(t.dtype).bits < 32:
    t = t.astype(jnp.float32)
  return t


@struct.dataclass
class Schedule:
  """A diffusion noise schedule x_t = alpha(t) x0 + sigma(t) eps on t in [0, 1] (a pytree).

  Build one with `discrete_vp`, `continuous_vp`, `cosine_vp` or `ve`. Static
  fields: `kind` (one of KINDS), `num_train_steps` (T for discrete schedules,
  0 for continuous ones) and `time_min` (= the property t_min). Array leaves
  hold the parameters of the kind (unused ones are None).

  Every method is elementwise on t (any shape); t = 1 is noise, t = 0 data.
  """
  kind: str = struct.field(pytree_node=False)
  num_train_steps: int = struct.field(pytree_node=False)
  time_min: float = struct.field(pytree_node=False)
  # discrete: log alpha at t = 0, 1/T, ..., 1 (T + 1 knots, float32).
  t_table: jax.Array | None = None
  log_alpha_table: jax.Array | None = None
  # linear_vp
  beta_min: jax.Array | None = None
  beta_max: jax.Array | None = None
  # cosine_vp
  cosine_s: jax.Array | None = None
  max_time: jax.Array | None = None
  # ve
  sigma_min: jax.Array | None = None
  sigma_max: jax.Array | None = None

  # -- time range ---------------------------------------------------------------
  @property
  def t_min(self) -> float:
    """Smallest training / sampling time: 1/T (discrete), 1e-3 (VP), 0 (VE)."""
    return float(self.time_min)

  @property
  def t_max(self) -> float:
    """Largest time, always 1.0 (pure noise end)."""
    return 1.0

  @property
  def is_discrete(self) -> bool:
    return self.kind == "discrete"

  @property
  def is_vp(self) -> bool:
    return self.kind != "ve"

  @property
  def alpha_bar_table(self):
    """alpha_bar_n = prod_{i<=n} (1 - beta_i), n = 0..T-1 (discrete schedules only)."""
    if not self.is_discrete:
      raise ValueError(f"alpha_bar_table needs a discrete schedule, this one is {self.kind!r}")
    return jnp.exp(2.0 * self.log_alpha_table[1:])

  # -- forward process ------------------------------------------------------------
  def log_alpha(self, t):
    """log alpha(t) (0 for VE); for discrete schedules piecewise linear through 0.5 log alpha_bar_n."""
    t = _float(t)
    if self.kind == "discrete":
      return jnp.interp(t, self.t_table, self.log_alpha_table).astype(t.dtype)
    if self.kind == "linear_vp":
      bmin, bmax = self.beta_min.astype(t.dtype), self.beta_max.astype(t.dtype)
      return -0.25 * t**2 * (bmax - bmin) - 0.5 * t * bmin
    if self.kind == "cosine_vp":
      s, m = self.cosine_s.astype(t.dtype), self.max_time.astype(t.dtype)
      u = m * t
      return (jnp.log(jnp.cos(0.5 * math.pi * (u + s) / (1 + s)))
              - jnp.log(jnp.cos(0.5 * math.pi * s / (1 + s))))
    return jnp.zeros_like(t)

  def log_sigma(self, t):
    """log sigma(t): 0.5 log(-expm1(2 log alpha)) for VP (-inf at t = 0), log-linear for VE."""
    t = _float(t)
    if self.kind == "ve":
      lo, hi = jnp.log(self.sigma_min).astype(t.dtype), jnp.log(self.sigma_max).astype(t.dtype)
      return lo + t * (hi - lo)
    return 0.5 * jnp.log(-jnp.expm1(2.0 * self.log_alpha(t)))

  def alpha(self, t):
    """Signal scale alpha(t) = exp(log alpha(t)); 1 for VE."""
    return jnp.exp(self.log_alpha(t))

  def sigma(self, t):
    """Noise scale sigma(t) = sqrt(1 - alpha^2) (VP, via expm1; 0 at t = 0) or
    sigma_min (sigma_max / sigma_min)^t (VE)."""
    if self.kind == "ve":
      return jnp.exp(self.log_sigma(t))
    return jnp.sqrt(-jnp.expm1(2.0 * self.log_alpha(t)))

  def log_snr(self, t):
    """lambda(t) = log(alpha / sigma) = log alpha - log sigma, decreasing; +inf at t = 0 (VP)."""
    return self.log_alpha(t) - self.log_sigma(t)

  def edm_sigma(self, t):
    """VE-equivalent noise level sigma / alpha = exp(-lambda) (Karras et al. 2022).

    VP: sqrt(expm1(-2 log alpha)) (0 at t = 0); VE: sigma(t).
    """
    if self.kind == "ve":
      return self.sigma(t)
    return jnp.sqrt(jnp.expm1(-2.0 * self.log_alpha(t)))

  # -- inverses -------------------------------------------------------------------
  def t_from_log_alpha(self, log_alpha):
    """The t with log alpha(t) = log_alpha (VP schedules): exact inverse of `log_alpha`.

    discrete: interpolation on the monotone table; linear_vp: the positive root
    t = 2L / (sqrt(b0^2 + 2 (b1 - b0) L) + b0), L = -2 log alpha (Lu et al. 2022);
    cosine_vp: u = 2 (1 + s)/pi arccos(alpha cos(pi/2 s/(1 + s))) - s, t = u / max_time.
    """
    la = _float(log_alpha)
    if self.kind == "discrete":
      return jnp.interp(-la, -self.log_alpha_table, self.t_table).astype(la.dtype)
    if self.kind == "linear_vp":
      bmin, bmax = self.beta_min.astype(la.dtype), self.beta_max.astype(la.dtype)
      big_l = -2.0 * la
      return 2.0 * big_l / (jnp.sqrt(bmin**2 + 2.0 * (bmax - bmin) * big_l) + bmin)
    if self.kind == "cosine_vp":
      s, m = self.cosine_s.astype(la.dtype), self.max_time.astype(la.dtype)
      c = jnp.exp(la + jnp.log(jnp.cos(0.5 * math.pi * s / (1 + s))))
      u = 2.0 * (1 + s) / math.pi * jnp.arccos(jnp.clip(c, -1.0, 1.0)) - s
      return u / m
    raise ValueError("t_from_log_alpha needs a VP schedule (alpha = 1 for all t in 've')")

  def t_from_log_snr(self, log_snr):
    """Exact inverse of `log_snr`: the t with lambda(t) = log_snr (vectorized).

    VP: log alpha = 0.5 log_sigmoid(2 lambda), then `t_from_log_alpha`
    (lambda = +inf -> t = 0). VE: t = (-lambda - log sigma_min) / log(sigma_max / sigma_min).
    """
    lam = _float(log_snr)
    if self.kind == "ve":
      lo, hi = jnp.log(self.sigma_min).astype(lam.dtype), jnp.log(self.sigma_max).astype(lam.dtype)
      return (-lam - lo) / (hi - lo)
    return self.t_from_log_alpha(0.5 * jax.nn.log_sigmoid(2.0 * lam))

  def t_from_edm_sigma(self, edm_sigma):
    """Inverse of `edm_sigma`: VP via log alpha = -0.5 log1p(s^2); VE via log sigma."""
    s = _float(edm_sigma)
    if self.kind == "ve":
      return self.t_from_log_snr(-jnp.log(s))
    return self.t_from_log_alpha(-0.5 * jnp.log1p(s**2))

  def model_time(self, t):
    """The network's time input: the index T t - 1 for discrete schedules (t_n -> n), t otherwise."""
    t = _float(t)
    if self.kind == "discrete":
      return self.num_train_steps * t - 1.0
    return t


# -----------------------------------------------------------------------------
# Betas and constructors.
# -----------------------------------------------------------------------------
def _check_open_unit(name, value):
  value = float(value)
  if not 0.0 < value < 1.0:
    raise ValueError(f"{name} must lie in (0, 1), got {name}={value!r}")
  return value


def linear_betas(T=1000, beta_start=1e-4, beta_end=0.02):
  """DDPM linear betas: beta_n = linspace(beta_start, beta_end, T) (Ho et al. 2020)."""
  T = _check_num_train_steps(T)
  beta_start = _check_open_unit("beta_start", beta_start)
  beta_end = _check_open_unit("beta_end", beta_end)
  return jnp.asarray(np.linspace(beta_start, beta_end, T, dtype=np.float64), jnp.float32)


def scaled_linear_betas(T=1000, beta_start=0.00085, beta_end=0.012):
  """Stable Diffusion betas: beta_n = linspace(sqrt(beta_start), sqrt(beta_end), T)^2 (Rombach et al. 2022)."""
  T = _check_num_train_steps(T)
  beta_start = _check_open_unit("beta_start", beta_start)
  beta_end = _check_open_unit("beta_end", beta_end)
  b = np.linspace(math.sqrt(beta_start), math.sqrt(beta_end), T, dtype=np.float64) ** 2
  return jnp.asarray(b, jnp.float32)


def cosine_betas(T=1000, s=0.008, max_beta=0.999):
  """Cosine betas: beta_n = min(1 - f((n+1)/T) / f(n/T), max_beta), f(u) = cos^2(pi/2 (u + s)/(1 + s)).

  alpha_bar_n = f((n + 1)/T) / f(0) wherever no beta is clipped (Nichol & Dhariwal
  2021, eq. 17; the clip at 0.999 avoids the singularity at u = 1).
  """
  T = _check_num_train_steps(T)
  if not s >= 0:
    raise ValueError(f"s must be >= 0, got s={s!r}")
  max_beta = _check_open_unit("max_beta", max_beta)
  u = np.arange(T + 1, dtype=np.float64) / T
  f = np.cos(0.5 * np.pi * (u + s) / (1 + s)) ** 2
  b = np.minimum(1.0 - f[1:] / f[:-1], max_beta)
  return jnp.asarray(b, jnp.float32)


def discrete_vp(betas) -> Schedule:
  """A discrete DDPM schedule wrapped as continuous time (Ho et al. 2020; Lu et al. 2022).

  alpha_bar_n = prod_{i<=n} (1 - beta_i); log alpha(t) is piecewise linear
  through (0, 0) and (t_n, 0.5 log alpha_bar_n), t_n = (n + 1)/T. The table is
  accumulated in float64 (sum of log1p(-beta)) and stored in float32.
  Raises ValueError unless betas is a 1-D array of T >= 1 values in (0, 1).
  """
  b = np.asarray(betas, dtype=np.float64)
  if b.ndim != 1 or b.shape[0] < 1:
    raise ValueError(f"betas must be a 1-D array with T >= 1 entries, got shape {b.shape}")
  if not np.all(np.isfinite(b)) or np.any(b <= 0) or np.any(b >= 1):
    raise ValueError(f"betas must lie in (0, 1), got min {b.min()!r} and max {b.max()!r}")
  T = int(b.shape[0])
  log_alpha = np.concatenate([[0.0], 0.5 * np.cumsum(np.log1p(-b))])
  t_table = np.arange(T + 1, dtype=np.float64) / T
  return Schedule(kind="discrete", num_train_steps=T, time_min=1.0 / T,
                  t_table=jnp.asarray(t_table, jnp.float32),
                  log_alpha_table=jnp.asarray(log_alpha, jnp.float32))


def continuous_vp(beta_min=0.1, beta_max=20.0, *, t_min=1e-3) -> Schedule:
  """Continuous VP-SDE: log alpha(t) = -0.25 t^2 (beta_max - beta_min) - 0.5 t beta_min.

  The integral of beta(t) = beta_min + t (beta_max - beta_min): alpha(t) =
  exp(-0.5 int_0^t beta) (Song et al. 2021, "Score-based generative modeling
  through SDEs", VP-SDE; the continuous limit of DDPM's linear schedule).
  """
  if not 0 < beta_min <= beta_max or not math.isfinite(beta_max):
    raise ValueError(f"beta_min, beta_max must satisfy 0 < beta_min <= beta_max < inf, "
                     f"got beta_min={beta_min!r}, beta_max={beta_max!r}")
  _check_t_min(t_min)
  return Schedule(kind="linear_vp", num_train_steps=0, time_min=float(t_min),
                  beta_min=jnp.asarray(beta_min, jnp.float32),
                  beta_max=jnp.asarray(beta_max, jnp.float32))


def cosine_vp(s=0.008, *, max_time=0.9946, t_min=1e-3) -> Schedule:
  """Continuous cosine VP: alpha(t) = cos(pi/2 (u + s)/(1 + s)) / cos(pi/2 s/(1 + s)), u = max_time t.

  Nichol & Dhariwal 2021's alpha_bar = alpha^2 in continuous time. alpha -> 0 as
  u -> 1, so t = 1 maps to u = max_time = 0.9946 (DPM-Solver's truncation, Lu et
  al. 2022), where lambda is about -4.8.
  """
  if not s >= 0:
    raise ValueError(f"s must be >= 0, got s={s!r}")
  if not 0 < max_time < 1:
    raise ValueError(f"max_time must lie in (0, 1), got max_time={max_time!r}")
  _check_t_min(t_min)
  return Schedule(kind="cosine_vp", num_train_steps=0, time_min=float(t_min),
                  cosine_s=jnp.asarray(s, jnp.float32),
                  max_time=jnp.asarray(max_time, jnp.float32))


def ve(sigma_min=0.002, sigma_max=80.0) -> Schedule:
  """Variance exploding: alpha = 1, sigma(t) = sigma_min (sigma_max / sigma_min)^t.

  The geometric noise ladder of NCSN (Song & Ermon 2019) and the VE-SDE (Song et
  al. 2021); defaults are EDM's range (Karras et al. 2022). t_min = 0, where
  sigma = sigma_min (not 0).
  """
  if not 0 < sigma_min < sigma_max or not math.isfinite(sigma_max):
    raise ValueError(f"sigma_min, sigma_max must satisfy 0 < sigma_min < sigma_max < inf, "
                     f"got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}")
  return Schedule(kind="ve", num_train_steps=0, time_min=0.0,
                  sigma_min=jnp.asarray(sigma_min, jnp.float32),
                  sigma_max=jnp.asarray(sigma_max, jnp.float32))


def _check_t_min(t_min):
  if not 0 < t_min < 1:
    raise ValueError(f"t_min must lie in (0, 1), got t_min={t_min!r}")
