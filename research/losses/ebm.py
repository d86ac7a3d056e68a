"""Energy-based models: the contrastive-divergence loss, short-run Langevin chains, a replay buffer.

An energy E_theta(x) defines p_theta(x) = exp(-E_theta(x)) / Z(theta). The gradient of
the negative log-likelihood of data x+ is

    d/dtheta [-log p_theta(x+)] = dE/dtheta(x+) - E_{x- ~ p_theta} [dE/dtheta(x-)],

so with negatives x- drawn (approximately) from the model the contrastive-divergence loss

    L = mean_i E(x+_i) - mean_j E(sg(x-_j)) + alpha (mean_i E(x+_i)^2 + mean_j E(x-_j)^2)

(sg = stop_gradient: the negatives are constants, only theta is differentiated) has the
likelihood gradient for alpha = 0. The alpha term is Du & Mordatch's energy-magnitude
regulariser, which keeps E(x+) and E(x-) near 0 and stops the free offset of E from
drifting (Du & Mordatch 2019, "Implicit Generation and Generalization in Energy-Based
Models", Sec. 3.3).

Negatives come from short-run MCMC started from a replay buffer (Du & Mordatch 2019,
Sec. 3.1) or from noise (Nijkamp et al. 2019, "Learning Non-Convergent Non-Persistent
Short-Run MCMC Toward Energy-Based Model"):

    x_{k+1} = x_k - (step_size / 2) grad_x E(x_k) + noise_scale * z_k,   z_k ~ N(0, I),

unadjusted Langevin dynamics; with noise_scale = sqrt(step_size) it targets exp(-E) as
step_size -> 0 (Roberts & Tweedie 1996), and Du & Mordatch decouple the two (a smaller
noise samples exp(-E / T) with temperature T = noise_scale^2 / step_size). Optional
elementwise gradient clipping (as in Du & Mordatch's code) and clamping to a data range
after every step. `mala_chain` adds the Metropolis-Hastings correction through the
kernel of research.mcmc (Roberts & Tweedie 1996).

Replay buffer (Du & Mordatch 2019, Sec. 3.1): each chain starts from a random buffer
entry with probability 1 - reinit_prob and from uniform noise over the data range
otherwise; the chain's final states are written back over the entries drawn.

Conventions: energy_fn maps a batch x of shape (B, *event) to energies (B,), each
depending on its own example only (no batch statistics), so grad_x sum_b E(x_b) is the
per-example gradient. Keys come first. Arguments that are Python numbers are checked;
traced ones pass unchecked.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from research import mcmc   # the one MALA kernel of the project

__all__ = ["cd_loss", "langevin_chain", "mala_chain", "uniform_init", "replay_draw",
           "replay_write", "grid_log_partition"]


# -- argument checks (concrete values only) ------------------------------------------
def _concrete(value) -> bool:
  return not isinstance(value, jax.core.Tracer)


def _check_count(name: str, value, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {name}={value!r}")
  return value


def _check_real(name: str, value, *, low: float, low_open: bool, high: float | None = None):
  if not _concrete(value):
    return value
  x = float(value)
  bad = math.isnan(x) or (x <= low if low_open else x < low) or (high is not None and x > high)
  if bad:
    interval = f"{'(' if low_open else '['}{low}, {'inf)' if high is None else f'{high}]'}"
    raise ValueError(f"{name} must lie in {interval}, got {name}={value!r}")
  return value


def _check_range(name: str, value) -> tuple[float, float]:
  try:
    low, high = (float(v) for v in value)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a pair (low, high), got {name}={value!r}") from None
  if not low < high:
    raise ValueError(f"{name} must satisfy low < high, got {name}={value!r}")
  return low, high


def check_reinit_prob(reinit_prob) -> float:
  """reinit_prob must lie in [0, 1] (ValueError naming it)."""
  return _check_real("reinit_prob", reinit_prob, low=0.0, low_open=False, high=1.0)


# -- the loss ------------------------------------------------------------------------
def cd_loss(energy_fn: Callable, x_data: jax.Array, x_model: jax.Array, *, alpha: float = 0.0):
  """Contrastive-divergence loss with Du & Mordatch's energy regulariser; returns (L, terms).

      L = mean E(x+) - mean E(sg(x-)) + alpha (mean E(x+)^2 + mean E(sg(x-))^2)

  (module docstring; Du & Mordatch 2019, eq. 2 and Sec. 3.3). x_model is wrapped in
  stop_gradient, so no gradient reaches the sampler's output. terms: "energy_data",
  "energy_model" (batch means), "cd" (their difference) and "regulariser" (without alpha).
  """
  _check_real("alpha", alpha, low=0.0, low_open=False)
  e_data = energy_fn(x_data)
  e_model = energy_fn(jax.lax.stop_gradient(x_model))
  cd = jnp.mean(e_data) - jnp.mean(e_model)
  reg = jnp.mean(jnp.square(e_data)) + jnp.mean(jnp.square(e_model))
  terms = {"energy_data": jnp.mean(e_data), "energy_model": jnp.mean(e_model), "cd": cd,
           "regulariser": reg}
  return cd + alpha * reg, terms


# -- short-run chains ----------------------------------------------------------------
def _event_axes(x) -> tuple:
  return tuple(range(1, x.ndim))


def langevin_chain(key: jax.Array, energy_fn: Callable, x0: jax.Array, num_steps: int,
                   step_size: float, noise_scale: float | None = None, *,
                   grad_clip: float | None = None,
                   clamp: Sequence[float] | None = None):
  """num_steps of unadjusted Langevin dynamics on E from x0 (B, *event); returns (x, info).

      g_k = clip(grad_x E(x_k), -grad_clip, grad_clip)         (elementwise; no clip if None)
      x_{k+1} = clamp(x_k - (step_size / 2) g_k + noise_scale z_k, low, high),  z_k ~ N(0, I)

  noise_scale None means sqrt(step_size), the discretised Langevin diffusion whose
  stationary law approaches exp(-E) as step_size -> 0 (Roberts & Tweedie 1996); Du &
  Mordatch 2019 (Sec. 3.1) decouple it. clamp = (low, high) projects onto the data box
  after every step (None: no clamp). One lax.scan; noise of step k from split(key)[k].
  info: "energy" and "grad_norm", (num_steps,) batch means of E(x_k) and |grad_x E(x_k)|
  (before clipping) at the start of each step, and "final_energy" (B,), E(x_num_steps).
  """
  _check_count("num_steps", num_steps, 1)
  _check_real("step_size", step_size, low=0.0, low_open=True)
  if noise_scale is None:
    noise_scale = jnp.sqrt(step_size) if not _concrete(step_size) else math.sqrt(step_size)
  _check_real("noise_scale", noise_scale, low=0.0, low_open=False)
  if grad_clip is not None:
    _check_real("grad_clip", grad_clip, low=0.0, low_open=True)
  bounds = None if clamp is None else _check_range("clamp", clamp)
  x0 = jnp.asarray(x0)
  if x0.ndim < 2:
    raise ValueError(f"x0 must be a batch (B, *event) with at least 2 axes, got shape {x0.shape}")

  def step(x, k):
    energies, vjp = jax.vjp(energy_fn, x)          # E(x_k) (B,) and its input gradient
    (grad,) = vjp(jnp.ones_like(energies))
    norm = jnp.sqrt(jnp.sum(jnp.square(grad), axis=_event_axes(grad)))
    if grad_clip is not None:
      grad = jnp.clip(grad, -grad_clip, grad_clip)
    x = x - 0.5 * step_size * grad + noise_scale * jax.random.normal(k, x.shape, x.dtype)
    if bounds is not None:
      x = jnp.clip(x, *bounds)
    return x, (jnp.mean(energies), jnp.mean(norm))

  x, (energy, grad_norm) = jax.lax.scan(step, x0, jax.random.split(key, num_steps))
  return x, {"energy": energy, "grad_norm": grad_norm, "final_energy": energy_fn(x)}


def mala_chain(key: jax.Array, energy_fn: Callable, x0: jax.Array, num_steps: int,
               step_size: float):
  """num_steps of MALA on exp(-E) from x0 (B, *event), one chain per example; returns (x, info).

  Proposal x' = x - (step_size / 2) grad E(x) + sqrt(step_size) z (the Langevin step of
  `langevin_chain` with noise_scale = sqrt(step_size)), accepted with the
  Metropolis-Hastings probability, which makes exp(-E) exactly invariant (Roberts &
  Tweedie 1996). The kernel is research.mcmc.mala(logdensity_fn, eps) with
  logdensity_fn(x) = -E(x) of one example and eps = step_size / 2 (its proposal is
  x + eps grad log p + sqrt(2 eps) z), vmapped over the batch; the noise of step k,
  chain b is split(split(key, num_steps)[k], B)[b]. No gradient clipping or clamping:
  either would break the accept / reject. info: "energy" (num_steps,) batch means of
  E(x_k) at the start of each step, "acceptance_rate" (num_steps,) batch means of the
  kernel's acceptance probability, "final_energy" (B,).
  """
  _check_count("num_steps", num_steps, 1)
  _check_real("step_size", step_size, low=0.0, low_open=True)
  x0 = jnp.asarray(x0)
  if x0.ndim < 2:
    raise ValueError(f"x0 must be a batch (B, *event) with at least 2 axes, got shape {x0.shape}")
  kernel = mcmc.mala(lambda x: -energy_fn(x[None])[0], 0.5 * step_size)
  state = jax.vmap(kernel.init)(x0)

  def step(state, k):
    energy = -jnp.mean(state.logdensity)
    state, info = jax.vmap(kernel.step)(jax.random.split(k, x0.shape[0]), state)
    return state, (energy, jnp.mean(info.acceptance_rate))

  state, (energy, acceptance) = jax.lax.scan(step, state, jax.random.split(key, num_steps))
  return state.position, {"energy": energy, "acceptance_rate": acceptance,
                          "final_energy": -state.logdensity}


# -- the replay buffer ---------------------------------------------------------------
def uniform_init(key: jax.Array, shape: Sequence[int], low: float, high: float) -> jax.Array:
  """Uniform noise U(low, high)^shape, float32: the chains' fresh starting points."""
  low, high = _check_range("(low, high)", (low, high))
  return jax.random.uniform(key, tuple(shape), jnp.float32, low, high)


def replay_draw(key: jax.Array, buffer: jax.Array, batch_size: int, reinit_prob: float,
                low: float, high: float):
  """Starting points of batch_size chains from a replay buffer (Du & Mordatch 2019, Sec. 3.1).

  indices: batch_size distinct entries of the buffer (N, *event), uniformly at random;
  chain b starts from buffer[indices[b]] with probability 1 - reinit_prob, else from
  U(low, high) noise. Returns (x0, indices, reinit) with reinit the (B,) bool mask of
  fresh starts. Write the chains' outputs back with replay_write(buffer, indices, x).
  """
  _check_count("batch_size", batch_size, 1)
  check_reinit_prob(reinit_prob)
  if batch_size > buffer.shape[0]:
    raise ValueError(f"batch_size={batch_size} exceeds the buffer's {buffer.shape[0]} entries")
  k_idx, k_mask, k_noise = jax.random.split(key, 3)
  indices = jax.random.permutation(k_idx, buffer.shape[0])[:batch_size]
  reinit = jax.random.bernoulli(k_mask, reinit_prob, (batch_size,))
  fresh = uniform_init(k_noise, (batch_size, *buffer.shape[1:]), low, high)
  mask = reinit.reshape((batch_size,) + (1,) * (buffer.ndim - 1))
  return jnp.where(mask, fresh, buffer[indices]), indices, reinit


def replay_write(buffer: jax.Array, indices: jax.Array, x: jax.Array) -> jax.Array:
  """buffer with the entries at `indices` (distinct) replaced by the chains' states x."""
  return buffer.at[indices].set(x.astype(buffer.dtype))


# -- normalising on a grid (low-dimensional models) -----------------------------------
def grid_log_partition(energies: jax.Array, cell_area: float) -> jax.Array:
  """log Z ~= log sum_cells exp(-E(c)) * cell_area: the Riemann sum of exp(-E) over a grid.

  Only the mass inside the grid counts; log p(x) = -E(x) - log Z is then the density
  normalised on the grid's box. logsumexp keeps it finite for large |E|.
  """
  _check_real("cell_area", cell_area, low=0.0, low_open=True)
  return jax.scipy.special.logsumexp(-jnp.ravel(energies)) + jnp.log(cell_area)
