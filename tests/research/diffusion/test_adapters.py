"""Tests for research/diffusion/adapters.py: predict, prediction wrappers, x0 clipping.

Time convention: t = 1 noise, t = 0 data; model_fn(x, t) with t of shape (batch,).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.data import gmm
from research.diffusion import adapters, exact, guidance, parameterization, schedules

SCHEDULE = schedules.discrete_vp(schedules.linear_betas())
MIX = gmm.GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.5]], [0.4, 0.5])
X = jax.random.normal(jax.random.PRNGKey(0), (6, 2))
T = jnp.full((6,), 0.4)


def test_reexports_are_the_originals():
  assert adapters.to_x0 is parameterization.to_x0 and adapters.PREDICTIONS == ("eps", "x0", "v",
                                                                               "score")
  assert adapters.classifier_free_guidance is guidance.classifier_free_guidance
  assert adapters.static_clipping is guidance.static_clipping
  assert adapters.PREDICTION.default == "eps" and adapters.PREDICTION.check("v") == "v"
  with pytest.raises(ValueError, match="prediction"):
    adapters.PREDICTION.check("noise")


@pytest.mark.parametrize("source", adapters.PREDICTIONS)
@pytest.mark.parametrize("target", adapters.PREDICTIONS)
def test_with_prediction_and_predict_convert_exactly(source, target):
  model = exact.mixture_model_fn(MIX, SCHEDULE, source)
  want = exact.mixture_model_fn(MIX, SCHEDULE, target)(X, T)
  wrapped = adapters.with_prediction(model, SCHEDULE, source, target)
  np.testing.assert_allclose(wrapped(X, T), want, rtol=2e-4, atol=2e-4)
  alpha, sigma = SCHEDULE.alpha(T[0]), SCHEDULE.sigma(T[0])
  out = adapters.predict(model, X, T[0], alpha, sigma, source, target)
  assert out.dtype == X.dtype
  np.testing.assert_allclose(out, want, rtol=2e-4, atol=2e-4)
  if source == target:
    assert wrapped is model


def test_predict_x0_eps_and_bad_names():
  model = exact.mixture_model_fn(MIX, SCHEDULE, "v")
  alpha, sigma = SCHEDULE.alpha(T[0]), SCHEDULE.sigma(T[0])
  x0, eps = adapters.predict_x0_eps(model, X, T[0], alpha, sigma, "v")
  np.testing.assert_allclose(alpha * x0 + sigma * eps, X, atol=1e-5)
  assert adapters.batch_time(0.3, X).shape == (6,)
  with pytest.raises(ValueError, match="target"):
    adapters.predict(model, X, T[0], alpha, sigma, "v", "noise")
  with pytest.raises(ValueError, match="source"):
    adapters.with_prediction(model, SCHEDULE, "noise", "eps")


def test_clip_x0_modes():
  model = lambda x, t: jnp.full_like(x, 3.0)                  # eps far from the data range
  t = jnp.full((6,), 0.99)
  x0 = lambda fn: parameterization.to_x0(fn(X, t), X, SCHEDULE.alpha(t), SCHEDULE.sigma(t), "eps")
  assert adapters.clip_x0(model, SCHEDULE, "eps", "none") is model
  assert float(jnp.max(jnp.abs(x0(model)))) > 1.0
  static = adapters.clip_x0(model, SCHEDULE, "eps", "static")
  assert float(jnp.max(jnp.abs(x0(static)))) <= 1.0 + 1e-4
  dynamic = adapters.clip_x0(model, SCHEDULE, "eps", "dynamic")
  assert float(jnp.max(jnp.abs(x0(dynamic)))) <= 1.0 + 1e-4
  with pytest.raises(ValueError, match="clip_x0"):
    adapters.clip_x0(model, SCHEDULE, "eps", "hard")
