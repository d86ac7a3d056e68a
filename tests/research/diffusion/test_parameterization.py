"""Tests for research/diffusion/parameterization.py (x = alpha x0 + sigma eps)."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.diffusion import parameterization as P
from research.diffusion import schedules as S

SHAPE = (6, 3, 2, 2)  # image-shaped (B, H, W, C)


def _truth(schedule_name):
  """x0, eps, x and every prediction type's exact value, with per-example (B,) alpha, sigma."""
  k0, k1 = jax.random.split(jax.random.key(0))
  x0 = jax.random.normal(k0, SHAPE)
  eps = jax.random.normal(k1, SHAPE)
  t = jnp.linspace(0.05, 0.95, SHAPE[0])
  sch = S.continuous_vp() if schedule_name == "vp" else S.ve(0.02, 5.0)
  alpha, sigma = sch.alpha(t), sch.sigma(t)
  a, s = alpha[:, None, None, None], sigma[:, None, None, None]
  x = a * x0 + s * eps
  preds = {"x0": x0, "eps": eps, "v": a * eps - s * x0, "score": -eps / s}
  return x, alpha, sigma, preds


@pytest.mark.parametrize("schedule_name", ["vp", "ve"])
def test_every_conversion_maps_truth_to_truth(schedule_name):
  x, alpha, sigma, preds = _truth(schedule_name)
  convert = jax.jit(P.convert, static_argnames=("source", "target"))
  for source, target in itertools.product(P.PREDICTIONS, repeat=2):
    out = convert(preds[source], x, alpha, sigma, source=source, target=target)
    np.testing.assert_allclose(out, preds[target], rtol=1e-4, atol=2e-5,
                               err_msg=f"{source} -> {target}")


@pytest.mark.parametrize("schedule_name", ["vp", "ve"])
def test_round_trips_for_all_pairs(schedule_name):
  x, alpha, sigma, _ = _truth(schedule_name)
  pred = jax.random.normal(jax.random.key(3), SHAPE)  # an arbitrary network output
  # float64 isolates the algebra: score <-> x0 multiplies float32 rounding by 1/sigma^2.
  with jax.enable_x64(True):
    x, alpha, sigma, pred = (jnp.asarray(a, jnp.float64) for a in (x, alpha, sigma, pred))
    for source, target in itertools.product(P.PREDICTIONS, repeat=2):
      there = P.convert(pred, x, alpha, sigma, source=source, target=target)
      back = P.convert(there, x, alpha, sigma, source=target, target=source)
      assert back.dtype == jnp.float64
      np.testing.assert_allclose(back, pred, rtol=1e-10, atol=1e-10,
                                 err_msg=f"{source}<->{target}")


def test_functions_agree_with_convert():
  x, alpha, sigma, preds = _truth("vp")
  for fn, target in ((P.to_eps, "eps"), (P.to_x0, "x0"), (P.to_v, "v"), (P.to_score, "score")):
    np.testing.assert_array_equal(fn(preds["v"], x, alpha, sigma, "v"),
                                  P.convert(preds["v"], x, alpha, sigma, source="v", target=target))


def test_eps_is_minus_sigma_score():
  x, alpha, sigma, preds = _truth("vp")
  score = jax.random.normal(jax.random.key(4), SHAPE)
  np.testing.assert_allclose(P.to_eps(score, x, alpha, sigma, "score"),
                             -sigma[:, None, None, None] * score, rtol=1e-6)


def test_v_identities_vp():
  # VP: x0 = alpha x - sigma v, eps = alpha v + sigma x, ||v||^2 + ||x||^2 = ||eps||^2 + ||x0||^2.
  x, alpha, sigma, preds = _truth("vp")
  a, s = alpha[:, None, None, None], sigma[:, None, None, None]
  v = preds["v"]
  np.testing.assert_allclose(P.to_x0(v, x, alpha, sigma, "v"), a * x - s * v, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(P.to_eps(v, x, alpha, sigma, "v"), a * v + s * x, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(jnp.sum(v**2 + x**2), jnp.sum(preds["eps"]**2 + preds["x0"]**2),
                             rtol=1e-5)


def test_scalar_and_full_coefficients():
  x, _, _, _ = _truth("vp")
  eps = jnp.ones(SHAPE)
  out_scalar = P.to_x0(eps, x, 0.6, 0.8, "eps")
  np.testing.assert_allclose(out_scalar, (x - 0.8) / 0.6, rtol=1e-6)
  full = jnp.full(SHAPE, 0.6)
  np.testing.assert_allclose(P.to_x0(eps, x, full, jnp.full(SHAPE, 0.8), "eps"), out_scalar,
                             rtol=1e-6)
  # 2-D data with batch == dim: a (B,) vector still means one value per example
  x2 = jnp.arange(4.0).reshape(2, 2)
  out = P.to_eps(jnp.zeros((2, 2)), x2, jnp.array([1.0, 1.0]), jnp.array([1.0, 2.0]), "x0")
  np.testing.assert_allclose(out, [[0.0, 1.0], [1.0, 1.5]])


def test_edm_precond_formulas():
  sigma = jnp.array([0.002, 0.5, 1.0, 80.0])
  c_skip, c_out, c_in, c_noise = P.edm_precond(sigma, sigma_data=0.5)
  s, sd = np.asarray(sigma, np.float64), 0.5
  np.testing.assert_allclose(c_skip, sd**2 / (s**2 + sd**2), rtol=1e-6)
  np.testing.assert_allclose(c_out, s * sd / np.sqrt(s**2 + sd**2), rtol=1e-6)
  np.testing.assert_allclose(c_in, 1 / np.sqrt(s**2 + sd**2), rtol=1e-6)
  np.testing.assert_allclose(c_noise, np.log(s) / 4, rtol=1e-6)
  # worked value at sigma = sigma_data = 0.5: (0.5, 0.35355, 1.41421, -0.17329)
  np.testing.assert_allclose([float(c[1]) for c in (c_skip, c_out, c_in, c_noise)],
                             [0.5, 0.3535534, 1.4142135, -0.1732868], rtol=1e-6)
  # unit-variance network input and training target (Karras et al. 2022, app. B.6):
  # c_in^2 (s^2 + sd^2) = 1 and (1 - c_skip)^2 sd^2 + c_skip^2 s^2 = c_out^2.
  np.testing.assert_allclose(c_in**2 * (s**2 + sd**2), 1.0, rtol=1e-6)
  np.testing.assert_allclose((1 - c_skip)**2 * sd**2 + c_skip**2 * s**2, c_out**2, rtol=1e-5)
  with pytest.raises(ValueError, match="sigma_data"):
    P.edm_precond(1.0, sigma_data=0.0)


@pytest.mark.parametrize("kwargs,name", [
    ({"source": "noise", "target": "eps"}, "source"),
    ({"source": "eps", "target": "mu"}, "target"),
])
def test_unknown_names(kwargs, name):
  x = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match=name):
    P.convert(x, x, 1.0, 1.0, **kwargs)
  with pytest.raises(ValueError, match="prediction"):
    P.to_eps(x, x, 1.0, 1.0, "velocity")


def test_shape_errors():
  x = jnp.zeros((4, 3))
  with pytest.raises(ValueError, match="same shape"):
    P.to_x0(jnp.zeros((4, 2)), x, 1.0, 1.0, "eps")
  with pytest.raises(ValueError, match="alpha"):
    P.to_x0(x, x, jnp.ones((5,)), 1.0, "eps")
  with pytest.raises(ValueError, match="sigma"):
    P.to_x0(x, x, 1.0, jnp.ones((4, 2)), "eps")
