"""Tests for the DPM-Solver / DPM-Solver++ / UniPC samplers (and shared sampler properties).

Ground truth: the exact probability-flow ODE map of an analytic Gaussian mixture
(mixture_setup.reference), from x_T at t = 1 to clean data (t = 0) or to t_min.
The model is the exact E[eps | x_t] of the mixture. Time convention: t = 1 noise,
t = 0 data.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.data import gmm
from research.diffusion import dpm_solvers, exact, parameterization, samplers
from research.diffusion import schedules
from tests.research.diffusion.mixture_setup import MIX, MODEL, SCHEDULE, X_T, reference, rmse, run


# ----------------------------------------------------------------------------
# The reference itself.
# ----------------------------------------------------------------------------
def test_reference_matches_closed_form_for_one_gaussian():
  # One component N(mu, c^2 I): in VE form y(s) = mu + (y_T - mu) sqrt(c^2 + s^2)/sqrt(c^2 + s_T^2).
  c = 0.5  # exactly representable in float32
  mu = np.array([1.0, -0.5])
  mix = gmm.GaussianMixture([1.0], [mu], [c])
  with jax.enable_x64(True):
    x = jnp.asarray(np.asarray(X_T[:8]), jnp.float64)
    out = exact.pf_ode_exact(exact.mixture_model_fn(mix, SCHEDULE), x, SCHEDULE,
                             t_end=[0.3, 0.0])
    s_T = float(SCHEDULE.edm_sigma(jnp.float64(1.0)))
    y_T = np.asarray(x) / float(SCHEDULE.alpha(jnp.float64(1.0)))
    for i, t in enumerate([0.3, 0.0]):
      s = float(SCHEDULE.edm_sigma(jnp.float64(t)))
      a = float(SCHEDULE.alpha(jnp.float64(t)))
      closed = a * (mu + (y_T - mu) * np.sqrt(c**2 + s**2) / np.sqrt(c**2 + s_T**2))
      np.testing.assert_allclose(np.asarray(out[i]), closed, atol=1e-9)


def test_mixture_eps_matches_gmm_in_float32():
  x = X_T * 2.0
  for t in (0.002, 0.3, 0.9):
    a, s = SCHEDULE.alpha(t), SCHEDULE.sigma(t)
    np.testing.assert_allclose(exact.mixture_eps(MIX, x, a, s),
                               gmm.eps(MIX, x, a, s), atol=2e-6)


# ----------------------------------------------------------------------------
# Accuracy against the exact ODE map and convergence orders.
# ----------------------------------------------------------------------------
# (name, options, num_steps, tolerance on the RMSE vs the exact map to t = 0),
# default options otherwise (for N >= 48 the default t_end is t_min). Measured
# errors are about half of each tolerance. The floor ~2e-4 is the final
# first-order step from sigma(t_min) = 0.01 to clean data.
HIGH_NFE_CASES = [
    ("ddim", {}, 400, 1.2e-2),
    ("dpm_solver", {"order": 3}, 80, 1.2e-3),
    ("dpm_solver", {"order": 3, "method": "singlestep",
                    "t_end": SCHEDULE.t_min}, 20, 8e-4),
    ("dpm_solver++", {"order": 2}, 80, 2e-3),
    ("unipc", {"order": 3}, 50, 5e-4),
]


@pytest.mark.parametrize("name,options,num_steps,tol", HIGH_NFE_CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in HIGH_NFE_CASES])
def test_high_nfe_matches_exact_map_to_data(name, options, num_steps, tol):
  out = run(name, num_steps, **options)
  assert rmse(out, reference()["zero"]) < tol


# (name, options, steps (N, 2N), minimum observed order log2(e_N / e_2N), tolerance
# on the 2N error). Runs end at t_min (final_step_to_zero=False) and are compared
# with the exact map to t_min, so the final step's O(sigma_min^2) error does not
# mask the order.
# Multistep order 3 (noise or data form) starts with a first-order step whose
# O(h^2) local error limits the asymptotic global order to 2 (seen: 2.0-2.3);
# UniPC-p reaches p + 1 through its corrector (seen: 2.9 and > 3.5).
ORDER_CASES = [
    ("dpm_solver", {"order": 1}, (100, 200), 0.9, 2.4e-2),
    ("dpm_solver", {"order": 2}, (40, 80), 1.8, 3e-3),
    ("dpm_solver", {"order": 3}, (40, 80), 1.9, 1e-3),
    ("dpm_solver", {"order": 2, "method": "singlestep"}, (20, 40), 1.9, 7e-3),
    ("dpm_solver", {"order": 3, "method": "singlestep"}, (5, 10), 2.9, 1e-2),
    ("dpm_solver++", {"order": 2}, (40, 80), 1.85, 2e-3),
    ("dpm_solver++", {"order": 3}, (40, 80), 1.85, 6e-4),
    ("unipc", {"order": 2}, (40, 80), 2.7, 3e-4),
    ("unipc", {"order": 3}, (20, 40), 2.9, 3e-4),
]


@pytest.mark.parametrize("name,options,steps,min_order,tol", ORDER_CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in ORDER_CASES])
def test_convergence_order(name, options, steps, min_order, tol):
  errors = [rmse(run(name, n, final_step_to_zero=False, spacing="logsnr_uniform",
                     **options), reference()["t_min"]) for n in steps]
  observed = np.log2(errors[0] / errors[1])
  assert observed > min_order, (errors, observed)
  assert errors[1] < tol, errors


def test_final_step_is_the_data_prediction_at_t_end():
  # N steps with the final step to sigma = 0 = (N - 1) steps to t_min, then
  # x = x0_pred(x, t_min) (the first-order data step with sigma_next = 0).
  for name, options in [("dpm_solver++", {"order": 3, "lower_order_final": False}),
                        ("dpm_solver", {"lower_order_final": False}), ("ddim", {})]:
    final = run(name, 12, t_end=SCHEDULE.t_min, **options)
    before = run(name, 11, final_step_to_zero=False, **options)
    t = SCHEDULE.t_min
    x0 = parameterization.to_x0(MODEL(before, jnp.full((32,), t)), before,
                                SCHEDULE.alpha(t), SCHEDULE.sigma(t), "eps")
    np.testing.assert_allclose(final, x0, atol=2e-5, err_msg=name)


# ----------------------------------------------------------------------------
# Structural identities.
# ----------------------------------------------------------------------------
def test_unipc_predictor_alone_is_dpm_solver_pp_2m():
  a = run("unipc", 10, order=2, use_corrector=False)
  b = run("dpm_solver++", 10, order=2)
  np.testing.assert_allclose(a, b, atol=1e-5)


def test_default_end_time_continues_the_quadratic_grid():
  # t_end = max(t_min, (1.5 / N)^2); without the final step to data, t_min.
  assert samplers.default_t_end(SCHEDULE, 5) == pytest.approx(0.09)
  assert samplers.default_t_end(SCHEDULE, 100) == SCHEDULE.t_min
  assert samplers.default_t_end(SCHEDULE, 5, final_step_to_zero=False) == SCHEDULE.t_min
  assert samplers.default_t_end(SCHEDULE, 5, spacing="time_uniform") == pytest.approx(0.1)
  assert samplers.default_t_end(SCHEDULE, 5, spacing="karras") == SCHEDULE.t_min
  # The samplers resolve t_end=None with this rule; sampling_grid itself keeps
  # the timesteps convention (t_end=None is t_min) for other callers.
  t_end = samplers.resolve_t_end(SCHEDULE, 5, None, "time_quadratic", True)
  assert t_end == pytest.approx(0.09)
  assert samplers.resolve_t_end(SCHEDULE, 5, 0.3, "time_quadratic", True) == 0.3
  grid = samplers.sampling_grid(SCHEDULE, 5, t_end=t_end)
  np.testing.assert_allclose(grid.t, schedules.timesteps(
      SCHEDULE, 4, "time_quadratic", t_end=0.09).tolist() + [0.0], atol=1e-6)
  assert float(samplers.sampling_grid(SCHEDULE, 5).t[-2]) == pytest.approx(SCHEDULE.t_min)
  # The last model call of the default unipc run is at t_end.
  times = []
  model = lambda x, t: (jax.debug.callback(lambda t: times.append(float(t[0])), t), MODEL(x, t))[1]
  run("unipc", 5, x=X_T[:2], model=model)
  jax.effects_barrier()
  assert times[-1] == pytest.approx(0.09, rel=1e-5)


def test_order_schedule_warm_up_and_lower_order_final():
  np.testing.assert_array_equal(dpm_solvers.order_schedule(6, 3),
                                [1, 2, 3, 3, 2, 1])
  np.testing.assert_array_equal(
      dpm_solvers.order_schedule(6, 3, lower_order_final=False), [1, 2, 3, 3, 3, 1])
  np.testing.assert_array_equal(
      dpm_solvers.order_schedule(20, 3, final_step_to_zero=False)[-3:], [3, 3, 3])


@pytest.mark.parametrize("schedule", [SCHEDULE, schedules.continuous_vp(), schedules.ve()],
                         ids=["discrete", "linear_vp", "ve"])
def test_sampling_grid_matches_schedules_timesteps(schedule):
  # sampling_grid rebuilds the timesteps grids in numpy (no compile per N).
  for spacing in ("time_uniform", "logsnr_uniform", "time_quadratic", "karras"):
    for n in (2, 9):
      grid = samplers.sampling_grid(schedule, n, spacing=spacing, t_end=0.02)
      t = schedules.timesteps(schedule, n - 1, spacing, t_end=0.02)
      np.testing.assert_allclose(grid.t[:-1], t, atol=1e-6)
      np.testing.assert_allclose(grid.alpha[:-1], schedule.alpha(t), rtol=1e-5)
      np.testing.assert_allclose(grid.sigma[:-1], schedule.sigma(t), rtol=1e-5)
      assert grid.sigma[-1] == 0 and grid.alpha[-1] == 1 and grid.t[-1] == 0
  # A traced schedule takes the schedules.timesteps path.
  traced = jax.jit(lambda s: samplers.sampling_grid(s, 9, t_end=0.02).t)(schedule)
  np.testing.assert_allclose(traced[:-1], schedules.timesteps(
      schedule, 8, samplers.DEFAULT_SPACING, t_end=0.02), atol=1e-6)
  grid = samplers.sampling_grid(SCHEDULE, 5, spacing="trailing")
  np.testing.assert_allclose(grid.t, [1.0, 0.8, 0.6, 0.4, 0.2, 0.0])


def test_phi_functions_are_accurate_near_zero_and_far():
  z = np.array([-30.0, -3.0, -1.0001, -0.9999, -1e-3, -1e-7, 0.0, 1e-6, 0.5, 1.0, 2.5])
  for k in (1, 2, 3, 4):
    # Reference by the series with exact rationals for small |z|, closed form otherwise.
    expected = []
    for v in z:
      if abs(v) < 2:
        expected.append(sum(v**j / np.prod(np.arange(1, j + k + 1, dtype=float))
                            for j in range(40)))
      else:
        acc = np.expm1(v) / v
        for m in range(1, k):
          acc = (acc - 1 / np.prod(np.arange(1, m + 1, dtype=float))) / v
        expected.append(acc)
    np.testing.assert_allclose(dpm_solvers.phi(k, z), expected, rtol=3e-6)
    np.testing.assert_allclose(dpm_solvers.phi(k, z, np), expected, rtol=1e-12)


# ----------------------------------------------------------------------------
# Compilation, batching, parameterizations, NFE.
# ----------------------------------------------------------------------------
def test_compiles_once_per_shape():
  for name, options in [("ddpm", {}), ("unipc", {}),
                        ("dpm_solver", {"method": "singlestep"})]:
    sampler = samplers.get(name)
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def sample(key, x):
      return sampler(key, MODEL, x, SCHEDULE, num_steps=8, **options)

    sample(jax.random.PRNGKey(0), X_T)
    sample(jax.random.PRNGKey(1), X_T + 1.0)
  # The program is one scan: its size does not depend on num_steps.
  sizes = {n: len(jax.make_jaxpr(lambda x: dpm_solvers.unipc(
      None, MODEL, x, SCHEDULE, num_steps=n))(X_T).eqns) for n in (20, 500)}
  assert sizes[20] == sizes[500]


@pytest.mark.parametrize("name,options", [
    ("ddpm", {}), ("ddim", {"eta": 0.5}), ("dpm_solver++", {"sde": True}),
])
def test_batch_size_invariance(name, options):
  # The stochastic samplers (deterministic ones are elementwise in the batch).
  key = jax.random.PRNGKey(5)
  x = jax.random.normal(jax.random.PRNGKey(6), (8, 2))
  big = run(name, 6, key=key, x=x, **options)
  small = run(name, 6, key=key, x=x[:4], **options)
  np.testing.assert_allclose(big[:4], small, atol=1e-6)


# Every sampler converts through samplers.predict_x0_eps (ddpm, ddim) or
# samplers.predict (dpm_solver, dpm_solver++, unipc): one of each.
@pytest.mark.parametrize("name,options", [("ddpm", {}), ("unipc", {})])
def test_prediction_types_agree_for_the_exact_model(name, options):
  sampler = samplers.get(name)

  @jax.jit
  def all_predictions(key, x):
    return [sampler(key, exact.mixture_model_fn(MIX, SCHEDULE, p), x, SCHEDULE,
                    num_steps=6, prediction=p, **options)
            for p in parameterization.PREDICTIONS]

  outs = all_predictions(jax.random.PRNGKey(2), X_T)
  for prediction, out in zip(parameterization.PREDICTIONS[1:], outs[1:]):
    np.testing.assert_allclose(out, outs[0], atol=2e-4, err_msg=prediction)


NFE_CASES = [
    ("ddpm", {}, 3),
    ("ddim", {"eta": 0.5, "final_step_to_zero": False}, 3),
    ("dpm_solver", {}, 1), ("dpm_solver", {"order": 2}, 4),
    ("dpm_solver", {"method": "singlestep", "order": 3}, 3),
    ("dpm_solver", {"method": "singlestep", "order": 2,
                    "final_step_to_zero": False}, 2),
    ("dpm_solver++", {"sde": True}, 3),
    ("unipc", {"order": 3}, 5),
    ("unipc", {"final_step_to_zero": False}, 3),
]


@pytest.mark.parametrize("name,options,num_steps", NFE_CASES)
def test_nfe_counts_the_model_calls(name, options, num_steps):
  calls = []

  def counting_model(x, t):
    # Runs on the host once per executed model call (also inside lax.scan).
    jax.debug.callback(lambda: calls.append(1))
    return MODEL(x, t)

  out = run(name, num_steps, x=X_T[:2], model=counting_model, **options)
  jax.effects_barrier()
  assert np.all(np.isfinite(np.asarray(out)))
  assert len(calls) == samplers.nfe(name, num_steps, **options)


# ----------------------------------------------------------------------------
# Bad inputs.
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpm_solver", "dpm_solver++", "unipc"])
def test_bad_num_steps_and_prediction(name):
  sampler = samplers.get(name)
  for bad in (0, -1, 2.5, True):
    with pytest.raises(ValueError, match="num_steps"):
      sampler(None, MODEL, X_T, SCHEDULE, num_steps=bad)
    with pytest.raises(ValueError, match="num_steps"):
      samplers.nfe(name, bad)
  with pytest.raises(ValueError, match="prediction"):
    sampler(None, MODEL, X_T, SCHEDULE, num_steps=3, prediction="noise")
  with pytest.raises(ValueError, match="spacing"):
    sampler(None, MODEL, X_T, SCHEDULE, num_steps=3, spacing="cubic")


def test_bad_options():
  for name in ("dpm_solver", "dpm_solver++", "unipc"):
    with pytest.raises(ValueError, match="order"):
      samplers.get(name)(None, MODEL, X_T, SCHEDULE, num_steps=3, order=4)
    with pytest.raises(ValueError, match="order"):
      samplers.nfe(name, 3, order=4)
  with pytest.raises(ValueError, match="eta"):
    samplers.ddim(None, MODEL, X_T, SCHEDULE, num_steps=3, eta=-0.1)
  with pytest.raises(ValueError, match="eta"):
    samplers.nfe("ddim", 3, eta=-0.1)
  with pytest.raises(ValueError, match="method"):
    samplers.nfe("dpm_solver", 3, method="adaptive")
  with pytest.raises(ValueError, match="variant"):
    dpm_solvers.unipc(None, MODEL, X_T, SCHEDULE, num_steps=3, variant="bh3")
  with pytest.raises(ValueError, match="name"):
    samplers.get("dpm_solver_v3")
  with pytest.raises(ValueError, match="t_end"):
    samplers.ddim(None, MODEL, X_T, SCHEDULE, num_steps=3, t_end=0.0,
                  final_step_to_zero=False)
