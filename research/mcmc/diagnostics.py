"""Convergence diagnostics of MCMC draws (Vehtari, Gelman, Simpson, Carpenter & Buerkner 2021).

Input: draws of shape (chains, draws) or (chains, draws, ...) (one result per
trailing component). Host-side NumPy / SciPy, not jitted.

* Split chains: each chain's first and last floor(n/2) draws become two chains
  (the middle draw of an odd n is dropped).
* Rank normalisation: z = Phi^-1((r - 3/8) / (S + 1/4)), r the average rank of a
  draw among all S draws.
* R-hat of (M chains, N draws): W = mean within-chain variance, B = N var(chain
  means), R = sqrt(((N - 1)/N W + B/N) / W). rhat = max(R(z(split x)),
  R(z(split |x - median x|))) (bulk and folded-tail).
* ESS: M N / tau, tau = -1 + 2 sum_{t <= T} rho_t (+ the odd half of the next pair),
  rho_t = 1 - (W - mean_m acov_m(t)) / var+, var+ = (N-1)/N W + B/N, the
  autocovariance by FFT; the sum is truncated with Geyer's initial positive
  sequence (pairs rho_{2k} + rho_{2k+1} > 0) made monotone (Geyer 1992), and
  tau >= 1 / log10(M N). ess_bulk = ESS(z(split x)); ess_tail = min of the ESS of
  the indicators 1{x <= q_0.05} and 1{x <= q_0.95} (split); ess_mean = ESS(split x).
* MCSE of the mean = sd / sqrt(ess_mean) (sd with ddof 1); MCSE of a quantile q_p
  from the Beta(ESS p + 1, ESS (1 - p) + 1) interval of the ranks (+-1 sd
  probabilities), halved, with ESS that of 1{x <= q_p}.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats


def _as_draws(x, fn: str) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim < 2 or x.shape[0] < 1 or x.shape[1] < 4:
    raise ValueError(f"{fn}: samples must have shape (chains, draws, ...) with at least 4 "
                     f"draws, got {x.shape}")
  return x


def _per_component(fn_2d, x):
  """Apply fn_2d to every (chains, draws) slice of x (chains, draws, ...)."""
  trailing = x.shape[2:]
  flat = x.reshape(x.shape[0], x.shape[1], -1)
  out = np.array([fn_2d(flat[:, :, i]) for i in range(flat.shape[2])])
  return out.reshape(trailing) if trailing else out[0]


def _split(x):
  half = x.shape[1] // 2
  return np.concatenate([x[:, :half], x[:, x.shape[1] - half:]], axis=0)


def _z_scale(x):
  ranks = stats.rankdata(x, method="average").reshape(x.shape)
  return special.ndtri((ranks - 0.375) / (x.size + 0.25))


def _rhat_raw(x):
  _, n = x.shape
  within = np.mean(np.var(x, axis=1, ddof=1))
  between = n * np.var(np.mean(x, axis=1), ddof=1)
  return np.sqrt((between / within + n - 1) / n)


def _autocov(x):
  """Biased autocovariance of each row (divided by n), by FFT."""
  n = x.shape[1]
  centred = x - x.mean(axis=1, keepdims=True)
  size = 2 ** int(np.ceil(np.log2(2 * n)))
  f = np.fft.rfft(centred, size, axis=1)
  return np.fft.irfft(f * np.conjugate(f), size, axis=1)[:, :n] / n


def _ess_raw(x):
  m, n = x.shape
  if not np.all(np.isfinite(x)) or np.ptp(x) == 0:
    return np.nan
  acov = _autocov(x)
  mean_var = np.mean(acov[:, 0]) * n / (n - 1)
  var_plus = mean_var * (n - 1) / n
  if m > 1:
    var_plus += np.var(np.mean(x, axis=1), ddof=1)
  rho = np.zeros(n)
  rho[0] = 1.0
  rho_even, rho_odd = 1.0, 1.0 - (mean_var - np.mean(acov[:, 1])) / var_plus
  rho[1] = rho_odd
  t = 1
  while t < n - 3 and rho_even + rho_odd > 0:   # Geyer's initial positive sequence
    rho_even = 1.0 - (mean_var - np.mean(acov[:, t + 1])) / var_plus
    rho_odd = 1.0 - (mean_var - np.mean(acov[:, t + 2])) / var_plus
    if rho_even + rho_odd >= 0:
      rho[t + 1], rho[t + 2] = rho_even, rho_odd
    t += 2
  max_t = t - 2
  if rho_even > 0:
    rho[max_t + 1] = rho_even
  t = 1
  while t <= max_t - 2:                          # ... made monotone
    if rho[t + 1] + rho[t + 2] > rho[t - 1] + rho[t]:
      rho[t + 1] = rho[t + 2] = (rho[t - 1] + rho[t]) / 2
    t += 2
  tau = -1.0 + 2.0 * np.sum(rho[:max_t + 1]) + np.sum(rho[max_t + 1:max_t + 2])
  tau = max(tau, 1.0 / np.log10(m * n))
  return m * n / tau


def _ess_quantile_2d(x, prob):
  return _ess_raw(_split((x <= np.quantile(x, prob)).astype(np.float64)))


def rhat(samples):
  """Rank-normalised split R-hat, max of bulk and folded (tail) R-hat, per component."""
  x = _as_draws(samples, "rhat")

  def one(x2):
    split = _split(x2)
    folded = np.abs(split - np.median(split))
    return max(_rhat_raw(_z_scale(split)), _rhat_raw(_z_scale(folded)))

  return _per_component(one, x)


def ess_bulk(samples):
  """Bulk ESS: the ESS of the rank-normalised split chains, per component."""
  x = _as_draws(samples, "ess_bulk")
  return _per_component(lambda x2: _ess_raw(_z_scale(_split(x2))), x)


def ess_tail(samples):
  """Tail ESS: min ESS of the 5% and 95% quantile indicators (split chains), per component."""
  x = _as_draws(samples, "ess_tail")
  return _per_component(lambda x2: min(_ess_quantile_2d(x2, 0.05),
                                       _ess_quantile_2d(x2, 0.95)), x)


def ess_mean(samples):
  """ESS of the mean: the ESS of the split chains themselves (no rank normalisation)."""
  x = _as_draws(samples, "ess_mean")
  return _per_component(lambda x2: _ess_raw(_split(x2)), x)


def mcse(samples, prob=None):
  """MCSE of the mean (prob None): sd / sqrt(ess_mean); of the prob-quantile otherwise."""
  x = _as_draws(samples, "mcse")
  if prob is None:
    return _per_component(lambda x2: np.std(x2, ddof=1) / np.sqrt(_ess_raw(_split(x2))), x)
  if not 0 < prob < 1:
    raise ValueError(f"mcse: prob must be in (0, 1), got {prob}")

  def one(x2):
    ess = _ess_quantile_2d(x2, prob)
    lo_hi = stats.beta.ppf([0.15865525393145707, 0.8413447460685429],
                           ess * prob + 1, ess * (1 - prob) + 1)
    ordered = np.sort(x2.ravel())
    size = ordered.size
    positions = lo_hi * size - 1
    lo = ordered[int(np.floor(np.nanmax([positions[0], 0])))]
    hi = ordered[int(np.ceil(np.nanmin([positions[1], size - 1])))]
    return (hi - lo) / 2

  return _per_component(one, x)
