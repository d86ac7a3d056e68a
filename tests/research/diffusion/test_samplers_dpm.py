"""Tests for the DDPM / DDIM / DPM-Solver / DPM-Solver++ / UniPC samplers.

Ground truth: the exact probability-flow ODE map of an analytic Gaussian mixture
(research.diffusion.exact.pf_ode_exact, float64 Dopri8 at rtol = atol = 1e-10),
from x_T at t = 1 to clean data (t = 0) or to t_min. The model is the exact
E[eps | x_t] of the mixture. Time convention: t = 1 noise, t = 0 data.
"""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.data import gmm, toy
from research.diffusion import dpm_solvers, exact, parameterization, samplers
from research.diffusion import schedules
from research.metrics import distances

SCHEDULE = schedules.discrete_vp(schedules.linear_betas())
# A smooth two-component mixture: the observed convergence orders show at
# 10-80 steps (sharp mixtures such as ring8 need many more steps for that).
MIX = gmm.GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [1.0, -0.5]], [0.5, 0.4])
MODEL = exact.mixture_model_fn(MIX, SCHEDULE)
X_T = jax.random.normal(jax.random.PRNGKey(0), (32, 2))


@functools.lru_cache(maxsize=None)
def reference():
  """Exact PF-ODE map of X_T to t_min and to t = 0 (float64, one solve)."""
  with jax.enable_x64(True):
    x64 = jnp.asarray(np.asarray(X_T), jnp.float64)
    ref = exact.pf_ode_exact(MODEL, x64, SCHEDULE, t_end=[SCHEDULE.t_min, 0.0])
    ref = np.asarray(ref)
  return {"t_min": ref[0], "zero": ref[1]}


def rmse(x, y):
  return float(np.sqrt(np.mean(np.sum((np.asarray(x, np.float64) - y)**2, -1))))


@functools.lru_cache(maxsize=None)
def _jitted(name, num_steps, model, options):
  return jax.jit(lambda k, x: samplers.get(name)(
      k, model, x, SCHEDULE, num_steps=num_steps, **dict(options)))


def run(name, num_steps, key=None, x=X_T, model=MODEL, **options):
  """The jitted sampler (compiled once per configuration) applied to (key, x)."""
  fn = _jitted(name, num_steps, model, tuple(sorted(options.items())))
  return fn(jax.random.PRNGKey(0) if key is None else key, x)


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
def test_ddim_eta0_is_deterministic_and_equals_dpm_solver_1():
  a = run("ddim", 12, key=jax.random.PRNGKey(1))
  b = run("ddim", 12, key=jax.random.PRNGKey(2))
  np.testing.assert_array_equal(a, b)
  grid = {"spacing": samplers.DDIM_SPACING}        # DDIM's default steps
  for method in ("multistep", "singlestep"):
    c = run("dpm_solver", 12, order=1, method=method, **grid)
    np.testing.assert_allclose(a, c, atol=2e-5)
  d = run("dpm_solver++", 12, order=1, **grid)
  np.testing.assert_allclose(a, d, atol=2e-5)


def test_ddim_eta_positive_adds_noise():
  a = run("ddim", 12, key=jax.random.PRNGKey(1), eta=0.5)
  b = run("ddim", 12, key=jax.random.PRNGKey(2), eta=0.5)
  a2 = run("ddim", 12, key=jax.random.PRNGKey(1), eta=0.5)
  det = run("ddim", 12)
  np.testing.assert_array_equal(a, a2)
  assert float(jnp.min(jnp.abs(a - b))) > 0.0
  assert rmse(a, np.asarray(b)) > 1e-2 and rmse(a, np.asarray(det)) > 1e-2


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


def _classical_chain(key, x, t_grid, eta=None):
  """DDPM (eta=None) or DDIM(eta) written as in Ho et al. / Song et al., in float64 numpy."""
  x = np.asarray(x, np.float64)
  ab = np.asarray(SCHEDULE.alpha(jnp.asarray(t_grid)), np.float64) ** 2
  ab = np.append(ab, 1.0)                                     # alpha_bar_prev = 1 at the end
  for n, t in enumerate(t_grid):
    eps = np.asarray(gmm.eps(MIX, jnp.asarray(x, jnp.float32), np.sqrt(ab[n]),
                             np.sqrt(1 - ab[n])), np.float64)
    x0 = (x - np.sqrt(1 - ab[n]) * eps) / np.sqrt(ab[n])
    z = np.asarray(samplers.per_example_normal(key, n, jnp.zeros(x.shape)), np.float64)
    a_prev = ab[n + 1]
    if eta is None:
      beta = 1 - ab[n] / a_prev
      mean = (np.sqrt(a_prev) * beta / (1 - ab[n]) * x0
              + np.sqrt(1 - beta) * (1 - a_prev) / (1 - ab[n]) * x)
      x = mean + np.sqrt((1 - a_prev) / (1 - ab[n]) * beta) * z
    else:
      s = eta * np.sqrt((1 - a_prev) / (1 - ab[n])) * np.sqrt(1 - ab[n] / a_prev)
      x = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev - s**2) * eps + s * z
  return x


def test_ddpm_and_ddim_match_the_classical_formulas_on_a_respaced_chain():
  key = jax.random.PRNGKey(7)
  x = X_T[:8]
  # Respaced chain: diffusers' "linspace" indices 999, 888, ..., 0 (10 steps).
  idx = schedules.index_grid(1000, 10, "linspace")
  t_grid = (idx + 1.0) / 1000
  out = run("ddpm", 10, key=key, x=x, spacing="linspace")
  np.testing.assert_allclose(out, _classical_chain(key, x, t_grid), atol=2e-4)
  out = run("ddim", 10, key=key, x=x, spacing="linspace", eta=0.7)
  np.testing.assert_allclose(out, _classical_chain(key, x, t_grid, eta=0.7),
                             atol=2e-4)


def test_ddpm_full_chain_uses_every_training_step():
  # num_steps = T: the respaced betas 1 - ab_n/ab_{n-1} are the original betas.
  small = schedules.discrete_vp(schedules.linear_betas(T=50, beta_end=0.2))
  model = exact.mixture_model_fn(MIX, small)
  key = jax.random.PRNGKey(3)
  x = X_T[:8]
  out = jax.jit(lambda k, x: samplers.ddpm(k, model, x, small, num_steps=50))(key, x)
  betas = np.asarray(schedules.linear_betas(T=50, beta_end=0.2), np.float64)
  ab = np.cumprod(1 - betas)
  xr = np.asarray(x, np.float64)
  for n, i in enumerate(range(49, -1, -1)):
    eps = np.asarray(gmm.eps(MIX, jnp.asarray(xr, jnp.float32), np.sqrt(ab[i]),
                             np.sqrt(1 - ab[i])), np.float64)
    x0 = (xr - np.sqrt(1 - ab[i]) * eps) / np.sqrt(ab[i])
    a_prev = ab[i - 1] if i > 0 else 1.0
    mean = (np.sqrt(a_prev) * betas[i] / (1 - ab[i]) * x0
            + np.sqrt(1 - betas[i]) * (1 - a_prev) / (1 - ab[i]) * xr)
    z = np.asarray(samplers.per_example_normal(key, n, jnp.zeros(x.shape)))
    xr = mean + np.sqrt((1 - a_prev) / (1 - ab[i]) * betas[i]) * z
  np.testing.assert_allclose(out, xr, atol=2e-4)


# ----------------------------------------------------------------------------
# Distributional accuracy of the stochastic samplers.
# ----------------------------------------------------------------------------
W2_N = 512
_w2 = jax.jit(distances.wasserstein2)


@functools.lru_cache(maxsize=None)
def _data_draws():
  keys = jax.random.split(jax.random.PRNGKey(11), 3)
  return [gmm.sample(k, MIX, W2_N) for k in keys]


@functools.lru_cache(maxsize=None)
def _w2_noise_floor():
  """Mean W2 between independent data draws of W2_N points (the sampling noise)."""
  d = _data_draws()
  return np.mean([float(_w2(d[0], d[1])), float(_w2(d[0], d[2])),
                  float(_w2(d[1], d[2]))])


def _w2_ratio(samples):
  d = _data_draws()
  return np.mean([float(_w2(samples, d[0])), float(_w2(samples, d[1]))]) / _w2_noise_floor()


def _mixture_moments(mix):
  w, mu, s = (np.asarray(v, np.float64) for v in (mix.weights, mix.means, mix.stds))
  mean = w @ mu
  second = np.einsum("k,ki,kj->ij", w, mu, mu) + np.sum(w * s**2) * np.eye(mu.shape[1])
  return mean, second - np.outer(mean, mean)


@pytest.mark.parametrize("name,num_steps,options", [
    ("ddpm", 1000, {}),
    ("ddim", 200, {"eta": 1.0}),
    ("dpm_solver++", 100, {"sde": True}),
])
def test_stochastic_samplers_reach_the_data_distribution(name, num_steps, options):
  key_x, key = jax.random.split(jax.random.PRNGKey(12))
  x_T = jax.random.normal(key_x, (W2_N, 2))
  out = np.asarray(run(name, num_steps, key=key, x=x_T, **options), np.float64)
  assert _w2_ratio(out) < 1.5
  # Moments within sampling error (4 standard errors for the mean, 15% for the covariance).
  mean, cov = _mixture_moments(MIX)
  np.testing.assert_allclose(out.mean(0), mean, atol=4 * np.sqrt(np.max(np.diag(cov)) / W2_N))
  np.testing.assert_allclose(np.cov(out.T), cov, atol=0.15 * np.max(np.diag(cov)))


def test_w2_check_detects_a_wrong_distribution():
  # Negative control: the same mixture with 1.5x wider components fails.
  wide = gmm.GaussianMixture(MIX.weights, MIX.means, 1.5 * MIX.stds)
  assert _w2_ratio(gmm.sample(jax.random.PRNGKey(13), wide, W2_N)) > 1.5


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
