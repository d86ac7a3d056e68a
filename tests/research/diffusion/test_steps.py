"""Tests for explicit sampler timesteps and the model-calibrated step grid (research/diffusion/steps.py).

Ground truth for the accuracy test: the closed-form PF-ODE map of one Gaussian
N(mu, c^2 I) (VE form y = x/alpha, s = sigma/alpha: y(s) = mu + (y_T - mu)
sqrt(c^2 + s^2)/sqrt(c^2 + s_T^2)). Time convention: t = 1 noise, t = 0 data.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.data import gmm
from research.diffusion import exact, samplers, schedules, steps

SCHEDULE = schedules.discrete_vp(schedules.linear_betas())
# Data of scale 3: the trajectories bend at lower SNR than the fixed grids assume.
C = 3.0
MU = np.array([1.0, -2.0], np.float32)
GAUSS = gmm.GaussianMixture([1.0], [MU.tolist()], [C])
MODEL = exact.mixture_model_fn(GAUSS, SCHEDULE)
X_EVAL = jax.random.normal(jax.random.key(0), (256, 2))
DETERMINISTIC = (("ddim", {}), ("dpm_solver", {"order": 2}), ("dpm_solver++", {"order": 3}),
                 ("unipc", {"order": 3}), ("euler", {}), ("heun", {}))


def closed_form_map(x_T):
  """Exact x0 of the PF-ODE for the single Gaussian from x_T at t = 1 (float64)."""
  s_T = float(SCHEDULE.edm_sigma(jnp.float32(1.0)))
  y_T = np.asarray(x_T, np.float64) / float(SCHEDULE.alpha(jnp.float32(1.0)))
  return MU + (y_T - MU) * C / np.sqrt(C**2 + s_T**2)


def rmse(x, y):
  return float(np.sqrt(np.mean(np.sum((np.asarray(x, np.float64) - y) ** 2, -1))))


@functools.lru_cache(maxsize=None)
def calibrated(num_steps, order):
  return steps.calibrate_timesteps(
      jax.random.key(123), MODEL, SCHEDULE, (2,), num_steps, sampler="unipc",
      sampler_options={"order": order}, num_samples=256, num_focus=32, batch_size=128,
      num_iters=60, reference_steps=200)


# ----------------------------------------------------------------------------
# The log-SNR parametrisation.
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("num_steps", [1, 2, 5, 17])
def test_params_give_valid_grids(num_steps):
  for seed in range(3):
    theta = 3.0 * jax.random.normal(jax.random.key(seed), (num_steps,))
    t = np.asarray(steps.timesteps_from_params(SCHEDULE, theta), np.float64)
    assert t.shape == (num_steps,)
    assert t[0] == 1.0
    assert np.all(np.diff(t) < 0)
    assert t[-1] >= SCHEDULE.t_min - 1e-7
    # Every grid is accepted by the samplers.
    samplers.check_timesteps(t, num_steps)


def test_params_round_trip_a_fixed_spacing():
  n = 8
  t_end = samplers.default_t_end(SCHEDULE, n, True, "time_uniform")
  t = np.asarray(samplers.sampling_grid(SCHEDULE, n, spacing="time_uniform", t_end=t_end).t[:-1])
  back = steps.timesteps_from_params(SCHEDULE, steps.params_from_timesteps(SCHEDULE, t))
  np.testing.assert_allclose(np.asarray(back), t, rtol=2e-3, atol=2e-5)


def test_params_are_jittable_and_differentiable():
  theta = jnp.linspace(-1.0, 1.0, 6)
  eager = steps.timesteps_from_params(SCHEDULE, theta)
  jitted = jax.jit(lambda p: steps.timesteps_from_params(SCHEDULE, p))(theta)
  np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-6)
  grad = jax.grad(lambda p: jnp.sum(steps.timesteps_from_params(SCHEDULE, p)))(theta)
  assert np.all(np.isfinite(np.asarray(grad)))
  assert float(jnp.max(jnp.abs(grad))) > 0


# ----------------------------------------------------------------------------
# Samplers with explicit timesteps.
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("name,options", DETERMINISTIC)
def test_explicit_timesteps_reproduce_the_spacing(name, options):
  n = 6
  spacing = "time_uniform"
  t_end = samplers.default_t_end(SCHEDULE, n, True, spacing)
  t = samplers.sampling_grid(SCHEDULE, n, spacing=spacing, t_end=t_end).t[:-1]
  run = lambda **kw: jax.jit(lambda x: samplers.get(name)(
      None, MODEL, x, SCHEDULE, num_steps=n, **options, **kw))(X_EVAL[:16])
  by_spacing = run(spacing=spacing, t_end=t_end)
  by_times = run(timesteps=np.asarray(t))
  np.testing.assert_allclose(np.asarray(by_times), np.asarray(by_spacing), rtol=1e-5, atol=1e-5)
  assert samplers.nfe(name, n, **options, timesteps=t) == samplers.nfe(name, n, **options)


@pytest.mark.parametrize("name,options", [("unipc", {"order": 3}), ("ddim", {}), ("heun", {})])
def test_traced_timesteps_under_jit_and_grad(name, options):
  n = 5
  theta = steps.params_from_timesteps(
      SCHEDULE, samplers.sampling_grid(SCHEDULE, n, spacing="time_uniform").t[:-1])
  target = closed_form_map(X_EVAL[:16])

  def loss(p):
    x = samplers.get(name)(None, MODEL, X_EVAL[:16], SCHEDULE, num_steps=n,
                           timesteps=steps.timesteps_from_params(SCHEDULE, p), **options)
    return jnp.mean(jnp.sum((x - target) ** 2, -1))

  value, grad = jax.jit(jax.value_and_grad(loss))(theta)
  eager = samplers.get(name)(None, MODEL, X_EVAL[:16], SCHEDULE, num_steps=n,
                             timesteps=np.asarray(steps.timesteps_from_params(SCHEDULE, theta)),
                             **options)
  assert float(value) == pytest.approx(float(np.mean(np.sum((np.asarray(eager) - target) ** 2, -1))),
                                       rel=1e-3)
  assert np.all(np.isfinite(np.asarray(grad)))
  assert float(jnp.max(jnp.abs(grad))) > 0


def test_calibration_loss_is_the_mean_squared_distance():
  t = np.asarray(samplers.sampling_grid(SCHEDULE, 4, spacing="time_uniform").t[:-1])
  target = closed_form_map(X_EVAL[:16])
  value = steps.calibration_loss(MODEL, SCHEDULE, X_EVAL[:16], target, "unipc", t,
                                 sampler_options={"order": 2})
  x = samplers.get("unipc")(None, MODEL, X_EVAL[:16], SCHEDULE, num_steps=4, order=2, timesteps=t)
  assert float(value) == pytest.approx(float(np.mean(np.sum((np.asarray(x) - target) ** 2, -1))),
                                       rel=1e-5)
  with pytest.raises(ValueError, match="sampler_options"):
    steps.calibration_loss(MODEL, SCHEDULE, X_EVAL[:16], target, "unipc", t,
                           sampler_options={"t_end": 0.1})


def test_bad_timesteps():
  run = lambda ts, **kw: samplers.get("unipc")(None, MODEL, X_EVAL[:4], SCHEDULE, num_steps=3,
                                               timesteps=ts, **kw)
  with pytest.raises(ValueError, match="timesteps"):
    run([1.0, 0.5])                          # wrong length
  with pytest.raises(ValueError, match="timesteps"):
    run([1.0, 0.2, 0.5])                     # not decreasing
  with pytest.raises(ValueError, match="timesteps"):
    run([1.5, 0.5, 0.1])                     # outside (0, 1]
  with pytest.raises(ValueError, match="timesteps"):
    run([1.0, 0.5, 0.0])                     # t = 0 is the final step, not an evaluation
  with pytest.raises(ValueError, match="timesteps"):
    run([[1.0, 0.5, 0.1]])                   # not 1-D
  with pytest.raises(ValueError, match="t_end"):
    run([1.0, 0.5, 0.1], t_end=0.1)
  # Without the final step to clean data the grid has num_steps + 1 times.
  with pytest.raises(ValueError, match="timesteps"):
    run([1.0, 0.5, 0.1], final_step_to_zero=False)
  out = run([1.0, 0.5, 0.1, 0.01], final_step_to_zero=False)
  assert out.shape == (4, 2)


# ----------------------------------------------------------------------------
# The calibrated grid.
# ----------------------------------------------------------------------------
def test_calibrated_grid_properties():
  result = calibrated(5, 2)
  t = np.asarray(result.timesteps, np.float64)
  assert t.shape == (5,)
  assert t[0] == 1.0 and np.all(np.diff(t) < 0) and t[-1] >= SCHEDULE.t_min - 1e-7
  assert result.loss <= result.initial_loss
  assert result.init in ("time_uniform", "time_quadratic", "logsnr_uniform")
  # Reference 200 + 3 initial solves + per start (3 starts) ceil(3 * 60 iterations *
  # (32 + 128) / 256) + 2 N-step passes, N = 5.
  assert result.calibration_nfe == 200 + 3 * 5 + 3 * (int(np.ceil(3 * 60 * 160 / 256)) + 2) * 5
  assert result.num_samples == 256


@pytest.mark.parametrize("order", [2, 3])
def test_calibrated_grid_beats_fixed_spacings_on_a_closed_form_case(order):
  # Calibrated on the model only (key 123), evaluated on other noise (key 0)
  # against the closed-form map of N(mu, 9 I).
  n = 5
  exact_x0 = closed_form_map(X_EVAL)
  run = lambda **kw: jax.jit(lambda x: samplers.get("unipc")(
      None, MODEL, x, SCHEDULE, num_steps=n, order=order, **kw))(X_EVAL)
  fixed = {s: rmse(run(spacing=s), exact_x0)
           for s in ("time_uniform", "time_quadratic", "logsnr_uniform")}
  ours = rmse(run(timesteps=calibrated(n, order).timesteps), exact_x0)
  # Measured: 40-80x below the best fixed spacing (order 2: 0.0019 vs 0.15; order 3:
  # 0.0006 vs 0.087).
  assert ours < 0.1 * min(fixed.values()), (ours, fixed)


def test_calibration_is_deterministic_given_the_key():
  kw = dict(sampler="ddim", num_samples=32, num_focus=4, batch_size=16, num_iters=5,
            reference_steps=20, init="time_uniform")
  a = steps.calibrate_timesteps(jax.random.key(5), MODEL, SCHEDULE, (2,), 4, **kw)
  b = steps.calibrate_timesteps(jax.random.key(5), MODEL, SCHEDULE, (2,), 4, **kw)
  np.testing.assert_array_equal(np.asarray(a.timesteps), np.asarray(b.timesteps))
  one = steps.calibrate_timesteps(jax.random.key(5), MODEL, SCHEDULE, (2,), 1, **kw)
  np.testing.assert_array_equal(np.asarray(one.timesteps), [1.0])


def test_calibration_bad_inputs():
  call = lambda **kw: steps.calibrate_timesteps(
      jax.random.key(0), MODEL, SCHEDULE, kw.pop("shape", (2,)), kw.pop("num_steps", 4),
      **{"num_samples": 8, "num_focus": 2, "num_iters": 1, "reference_steps": 5, **kw})
  for kw, name in [({"num_steps": 0}, "num_steps"), ({"num_samples": 0}, "num_samples"),
                   ({"num_focus": 8}, "num_focus"), ({"num_focus": -1}, "num_focus"),
                   ({"batch_size": 0}, "batch_size"), ({"num_iters": 0}, "num_iters"),
                   ({"reference_steps": 0}, "reference_steps"),
                   ({"learning_rate": -0.1}, "learning_rate"), ({"init": "leading"}, "init"),
                   ({"init": ()}, "init"), ({"shape": ()}, "shape"),
                   ({"sampler": "no_such_sampler"}, "name"), ({"sampler": 3}, "sampler"),
                   ({"sampler_options": {"spacing": "karras"}}, "sampler_options"),
                   ({"sampler_options": {"bogus": 1}}, "bogus"),
                   ({"prediction": "noise"}, "prediction")]:
    with pytest.raises(ValueError, match=name):
      call(**kw)
  with pytest.raises(ValueError, match="params"):
    steps.timesteps_from_params(SCHEDULE, jnp.zeros((2, 2)))
  with pytest.raises(ValueError, match="timesteps"):
    steps.params_from_timesteps(SCHEDULE, [0.9, 0.5])          # does not start at t = 1
