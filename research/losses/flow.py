"""Conditional flow-matching loss.

Time convention (flow matching): t = 0 is noise, t = 1 is data. x0 ~ N(0, I) is
noise, x1 a data batch, and the network v(x, t) is a velocity field that the
ODE dx/dt = v(x, t) integrates from t = 0 to t = 1 (research/flow/ode.py).

    L(theta) = E_{t, (x0, x1) ~ pi, eps} || v_theta(x_t, t) - u_t(x_t | x0, x1) ||^2

with x_t and u_t from a conditional path and pi a coupling
(research/flow/paths.py): Lipman et al. 2023 (flow matching), Tong et al. 2023
(I-CFM, OT-CFM), Liu et al. 2023 (rectified flow = "icfm" with sigma = 0),
Albergo & Vanden-Eijnden 2023 (stochastic interpolants).

Reduction convention: squared error SUMMED over all non-batch axes of an
example, then AVERAGED over the batch. (Divide by the number of entries per
example for a per-dimension MSE; it is reported as metrics["loss_per_dim"].)

Randomness: `key` is split once into an example key and a coupling key.
Example i draws its x0, t and eps from fold_in(example_key, i), so with the
independent coupling the noise of example i does not depend on the batch size.
The OT coupling depends on the whole batch by construction.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from research.flow import paths as paths_lib

__all__ = ["T_SAMPLERS", "sample_time", "cfm_loss"]


def _uniform_time(key, dtype):
  """t ~ U[0, 1) (Lipman et al. 2023; Tong et al. 2023)."""
  return jax.random.uniform(key, (), dtype=dtype)


def _logit_normal_time(key, dtype):
  """t = sigmoid(n), n ~ N(0, 1): logit-normal time (Esser et al. 2024, SD3)."""
  return jax.nn.sigmoid(jax.random.normal(key, (), dtype=dtype))


_T_SAMPLERS = {"uniform": _uniform_time, "logit_normal": _logit_normal_time}
T_SAMPLERS = tuple(_T_SAMPLERS)


def sample_time(name, key, dtype=jnp.float32):
  """One training time t in [0, 1] for one example, drawn by sampler `name`.

  "uniform": t ~ U[0, 1) (Lipman et al. 2023); "logit_normal":
  t = sigmoid(N(0, 1)) (Esser et al. 2024). t = 0 is noise, t = 1 is data.
  Raises ValueError for an unknown name.
  """
  if name not in _T_SAMPLERS:
    raise ValueError(
        f"unknown t_sampler {name!r}; valid t_samplers: {list(T_SAMPLERS)}")
  return _T_SAMPLERS[name](key, dtype)


def cfm_loss(model_fn, key, x1, *, path="icfm", coupling="independent",
             sigma=None, sigma_min=None, t_sampler="uniform"):
  """Conditional flow-matching loss E ||v(x_t, t) - u_t(x_t | x0, x1)||^2.

  Draws per example x0 ~ N(0, I), t ~ t_sampler, eps ~ N(0, I); pairs (x0, x1)
  by `coupling` ("independent" or "ot"); builds x_t and the target u_t with
  `path` ("icfm", "lipman", "vp"); and returns the squared error summed over
  non-batch axes and averaged over the batch (Lipman et al. 2023; Tong et al.
  2023 for I-CFM / OT-CFM; Liu et al. 2023 rectified flow is path="icfm",
  sigma=0).

  Args:
    model_fn: pure callable model_fn(x, t) -> velocity of x's shape, with
      x of shape (B, ...) and t of shape (B,).
    key: PRNG key; the result is a deterministic function of it.
    x1: data batch, shape (B, ...), float.
    path: probability path name (research.flow.paths.PATHS).
    coupling: coupling name (research.flow.paths.COUPLINGS).
    sigma: I-CFM noise floor (only for path="icfm"; default 0).
    sigma_min: Lipman's sigma_min (only for path="lipman"; default 1e-4).
    t_sampler: "uniform" or "logit_normal".

  Returns:
    (loss, metrics) with metrics = {"loss", "loss_per_dim", "target_sq_norm"
    (batch mean of ||u_t||^2), "pair_sq_dist" (batch mean of ||x1 - x0||^2
    after coupling)}.

  Raises ValueError for an unknown path / coupling / t_sampler, a parameter the
  path does not take (e.g. sigma with path="vp"), or a bad parameter value.
  """
  params = {}
  if sigma is not None:
    params["sigma"] = sigma
  if sigma_min is not None:
    params["sigma_min"] = sigma_min
  prob_path = paths_lib.get_path(path, **params)
  if coupling not in paths_lib.COUPLINGS:
    raise ValueError(f"unknown coupling {coupling!r}; valid couplings: "
                     f"{list(paths_lib.COUPLINGS)}")
  if t_sampler not in T_SAMPLERS:
    raise ValueError(f"unknown t_sampler {t_sampler!r}; valid t_samplers: "
                     f"{list(T_SAMPLERS)}")
  x1 = jnp.asarray(x1)
  if x1.ndim < 1 or x1.shape[0] < 1:
    raise ValueError(f"x1 must have a non-empty batch axis, got {x1.shape}")
  if not jnp.issubdtype(x1.dtype, jnp.floating):
    raise ValueError(f"x1 must be a float array, got dtype {x1.dtype}")

  batch = x1.shape[0]
  example_shape = x1.shape[1:]
  example_key, coupling_key = jax.random.split(key)

  def draw(i):
    k_x0, k_t, k_eps = jax.random.split(jax.random.fold_in(example_key, i), 3)
    return (jax.random.normal(k_x0, example_shape, x1.dtype),
            sample_time(t_sampler, k_t, x1.dtype),
            jax.random.normal(k_eps, example_shape, x1.dtype))

  x0, t, eps = jax.vmap(draw)(jnp.arange(batch))
  x0, x1 = paths_lib.couple(coupling, coupling_key, x0, x1)
  xt, ut = prob_path.interpolate(x0, x1, t, eps)

  vt = model_fn(xt, t)
  if vt.shape != xt.shape:
    raise ValueError(
        f"model_fn must return the shape of x {xt.shape}, got {vt.shape}")
  sum_axes = tuple(range(1, x1.ndim))
  per_example = jnp.sum(jnp.square(vt - ut), axis=sum_axes)
  loss = jnp.mean(per_example)
  dims = max(1, int(x1.size // batch))
  metrics = {
      "loss": loss,
      "loss_per_dim": loss / dims,
      "target_sq_norm": jnp.mean(jnp.sum(jnp.square(ut), axis=sum_axes)),
      "pair_sq_dist": jnp.mean(jnp.sum(jnp.square(x1 - x0), axis=sum_axes)),
  }
  return loss, metrics
