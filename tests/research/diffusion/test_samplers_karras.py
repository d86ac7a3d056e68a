"""Tests for research/diffusion/karras.py: Euler, EDM Heun (churn), Euler ancestral.

The model is the exact eps of an analytic 2-D Gaussian mixture, so the only
error is the sampler's: deterministic samplers are compared with the exact
probability-flow ODE map (research.diffusion.exact, float64, rtol = atol = 1e-10),
stochastic ones with the data distribution (exact W2 on 500 points).
Samplers are jitted with the step count and options static (one compile each).
"""
import functools

import chex
import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.data import gmm as G
from research.diffusion import exact
from research.diffusion import karras
from research.diffusion import samplers
from research.diffusion import schedules as S
from research.metrics.distances import wasserstein2

MIX = G.ring(8, 1.5, 0.2)
SCHED = S.discrete_vp(S.linear_betas(1000))
VE = S.ve()
MODELS = {p: exact.mixture_model_fn(MIX, SCHED, p) for p in ("eps", "x0", "v", "score")}
VE_MODEL = exact.mixture_model_fn(MIX, VE, "eps")


@functools.partial(jax.jit, static_argnames=("name", "num_steps", "options", "prediction", "ve"))
def _sample(key, x_T, *, name, num_steps, options=(), prediction="eps", ve=False):
  model, schedule = (VE_MODEL, VE) if ve else (MODELS[prediction], SCHED)
  return samplers.get(name)(key, model, x_T, schedule, num_steps=num_steps,
                            prediction=prediction, **dict(options))


def _x_T(n, seed=0, scale=1.0):
  return scale * jax.random.normal(jax.random.key(seed), (n, 2))


@jax.jit
def _pf_ode_ve_form(y_start, s_start):
  """Exact PF-ODE map in VE form, dy/ds = eps_mix(y; s) from s_start to s = 0 (float64).

  The same ODE for every schedule (only s_start = s(1) differs), so one compile
  serves the VP and the VE checks; it agrees with exact.pf_ode_exact to 1e-9.
  """
  term = diffrax.ODETerm(lambda s, y, args: exact.mixture_eps(MIX, y, 1.0, s))
  sol = diffrax.diffeqsolve(term, diffrax.Tsit5(), s_start, 0.0, None, y_start,
                            stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-10),
                            max_steps=100_000, saveat=diffrax.SaveAt(t1=True))
  return sol.ys[-1]


@functools.lru_cache(maxsize=None)
def _exact_map(n, ve=False):
  """(x_T, exact x0) for n start points: x_T ~ N(0, I) (VP) or N(0, 80^2 I) (VE)."""
  schedule = VE if ve else SCHED
  x_T = _x_T(n, scale=80.0 if ve else 1.0)
  with jax.enable_x64(True):
    one = jnp.float64(1.0)
    y_T = jnp.asarray(x_T, jnp.float64) / schedule.alpha(one).astype(jnp.float64)
    out = _pf_ode_ve_form(y_T, schedule.edm_sigma(one).astype(jnp.float64))
  return np.asarray(x_T), np.asarray(out, np.float64)


def _rmse(a, b):
  return float(np.sqrt(np.mean((np.asarray(a, np.float64) - b) ** 2)))


# ---------------------------------------------------------------------------
# Accuracy against the exact PF-ODE map. Step counts are shared between tests
# (euler 20/40, heun 20/40, churn 20) so that each compile is reused.


def test_euler_and_heun_converge_with_orders_one_and_two():
  x_T, ref = _exact_map(64)
  errs = {name: [_rmse(_sample(None, x_T, name=name, num_steps=n), ref) for n in (20, 40)]
          for name in ("euler", "heun")}
  euler_order = np.log2(errs["euler"][0] / errs["euler"][1])
  heun_order = np.log2(errs["heun"][0] / errs["heun"][1])
  # Measured: euler 0.069 -> 0.033 (order 1.05); heun 0.022 -> 0.0042 (order 2.35)
  # (NFE 39 -> 79; at NFE 159 heun reaches 1e-3, order 2.2).
  assert 0.8 < euler_order < 1.3, errs
  assert 1.7 < heun_order < 2.8, errs
  assert errs["heun"][1] < 8e-3 < errs["euler"][1], errs


def test_heun_on_ve_schedule_matches_exact_map():
  x_T, ref = _exact_map(64, ve=True)          # x_T ~ N(0, 80^2 I): the VE scale
  out = _sample(None, x_T, name="heun", num_steps=40, ve=True)
  assert _rmse(out, ref) < 8e-3


def test_v_prediction_gives_the_same_samples():
  prediction = "v"
  x_T = _x_T(64)
  ref = _sample(None, x_T, name="heun", num_steps=20)
  out = _sample(None, x_T, name="heun", num_steps=20, prediction=prediction)
  np.testing.assert_allclose(out, ref, atol=2e-4)


def test_euler_is_ddim_in_ve_form():
  # y_s = y_t + (s_s - s_t) eps is x_s = alpha_s x0 + sigma_s eps (DDIM, eta = 0).
  x_T = _x_T(64)
  np.testing.assert_allclose(
      _sample(None, x_T, name="euler", num_steps=20),
      _sample(None, x_T, name="ddim", num_steps=20, options=(("spacing", "karras"),)),
      atol=1e-4)


def test_ancestral_with_eta_zero_is_euler():
  x_T = _x_T(64)
  np.testing.assert_allclose(
      _sample(jax.random.key(1), x_T, name="euler_ancestral", num_steps=20,
              options=(("eta", 0.0),)),
      _sample(None, x_T, name="euler", num_steps=20), atol=1e-6)


def test_final_step_to_zero_option():
  x_T, ref = _exact_map(64)
  noisy = _sample(None, x_T, name="heun", num_steps=40,
                  options=(("final_step_to_zero", False),))
  clean = _sample(None, x_T, name="heun", num_steps=40)
  # Without the final step the ODE stops at t_min (s ~ 0.01): for the exact PF-ODE
  # y(s_min) - y(0) = O(s_min^2 / component variance), so both are close to x0.
  assert _rmse(clean, ref) < 8e-3 and _rmse(noisy, ref) < 8e-3
  assert float(jnp.max(jnp.abs(clean - noisy))) > 1e-5


# ---------------------------------------------------------------------------
# Stochasticity, distribution, batch invariance.

CHURN = (("s_churn", 10.0),)


def test_heun_churn_is_stochastic_and_keyed():
  x_T = _x_T(64)
  a = _sample(jax.random.key(1), x_T, name="heun", num_steps=20, options=CHURN)
  b = _sample(jax.random.key(1), x_T, name="heun", num_steps=20, options=CHURN)
  c = _sample(jax.random.key(2), x_T, name="heun", num_steps=20, options=CHURN)
  det = _sample(None, x_T, name="heun", num_steps=20)
  np.testing.assert_array_equal(a, b)
  assert float(jnp.max(jnp.abs(a - c))) > 1e-2
  assert float(jnp.max(jnp.abs(a - det))) > 1e-2
  # s_tmin above every level: gamma = 0 everywhere, the deterministic sampler.
  off = _sample(jax.random.key(1), x_T, name="heun", num_steps=20,
                options=CHURN + (("s_tmin", 1e6),))
  np.testing.assert_allclose(off, det, atol=1e-6)


def test_ancestral_reaches_the_data_distribution():
  n = 500
  data = G.sample(jax.random.key(11), MIX, n)
  floor = float(wasserstein2(G.sample(jax.random.key(12), MIX, n), data))
  out = _sample(jax.random.key(3), _x_T(n), name="euler_ancestral", num_steps=50)
  w2 = float(wasserstein2(out, data))
  assert w2 < 1.5 * floor, (w2, floor)        # measured ratio ~0.7-1.0


@pytest.mark.parametrize("name,num_steps,options,big", [
    ("euler_ancestral", 50, (), 500), ("heun", 20, CHURN, 64)])
def test_noise_does_not_depend_on_batch_size(name, num_steps, options, big):
  key = jax.random.key(3 if name == "euler_ancestral" else 1)
  x_T = _x_T(big)
  full = _sample(key, x_T, name=name, num_steps=num_steps, options=options)
  part = _sample(key, x_T[:3], name=name, num_steps=num_steps, options=options)
  np.testing.assert_allclose(full[:3], part, atol=1e-5)


# ---------------------------------------------------------------------------
# Compilation and NFE.


def _count_model_traces(name, num_steps, **options):
  calls = []

  def model(x, t):
    calls.append(1)
    return MODELS["eps"](x, t)

  jax.make_jaxpr(lambda k, x: samplers.get(name)(k, model, x, SCHED, num_steps=num_steps,
                                                 **options))(jax.random.key(0), _x_T(4))
  return len(calls)


@pytest.mark.parametrize("name,traces", [("euler", 1), ("euler_ancestral", 1), ("heun", 3)])
def test_model_is_traced_a_fixed_number_of_times(name, traces):
  # One lax.scan: the trace (hence compile time) does not grow with num_steps.
  assert _count_model_traces(name, 5) == _count_model_traces(name, 200) == traces


@pytest.mark.parametrize("name,options", [
    ("euler_ancestral", {}), ("heun", {"s_churn": 3.0}), ("heun", {"final_step_to_zero": False})])
def test_nfe_is_exact_and_compiles_once(name, options):
  count = [0]

  def model(x, t):
    jax.debug.callback(lambda _: count.__setitem__(0, count[0] + 1), t[0])
    return MODELS["eps"](x, t)

  chex.clear_trace_counter()   # the counter is keyed by source location (parametrized test)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(key, x_T):
    return samplers.get(name)(key, model, x_T, SCHED, num_steps=4, **options)

  jax.block_until_ready(run(jax.random.key(0), _x_T(2, seed=0)))
  jax.block_until_ready(run(jax.random.key(1), _x_T(2, seed=1)))   # no retrace
  jax.effects_barrier()
  expected = {"heun": 7 if options.get("final_step_to_zero", True) else 8}.get(name, 4)
  assert count[0] == 2 * samplers.nfe(name, 4, **options) == 2 * expected


# ---------------------------------------------------------------------------
# Grid and validation.


def test_noise_levels_end_at_zero_without_repeats():
  t, s = jax.jit(lambda schedule: karras.noise_levels(schedule, 10))(SCHED)
  assert t.shape == s.shape == (11,)
  assert float(s[-1]) == 0.0 and float(t[0]) == 1.0
  assert np.all(np.diff(np.asarray(s)) < 0)
  np.testing.assert_allclose(float(s[0]), float(SCHED.edm_sigma(1.0)), rtol=1e-5)
  np.testing.assert_allclose(float(s[-2]), float(SCHED.edm_sigma(SCHED.t_min)), rtol=1e-4)
  # Karras spacing: s^(1/7) uniform over the nonzero levels.
  np.testing.assert_allclose(np.diff(np.asarray(s[:-1], np.float64) ** (1 / 7)),
                             np.diff(np.asarray(s[:-1], np.float64) ** (1 / 7))[0], rtol=1e-3)
  _, s_ve = jax.jit(lambda schedule: karras.noise_levels(schedule, 1))(VE)
  np.testing.assert_allclose(np.asarray(s_ve), [80.0, 0.0], rtol=1e-5)


def test_invalid_arguments_are_refused():
  x_T = _x_T(4)
  model = MODELS["eps"]
  with pytest.raises(ValueError, match="s_churn"):
    karras.heun(None, model, x_T, SCHED, num_steps=4, s_churn=-1.0)
  with pytest.raises(ValueError, match="key"):
    karras.heun(None, model, x_T, SCHED, num_steps=4, s_churn=1.0)
  with pytest.raises(ValueError, match="eta"):
    karras.euler_ancestral(jax.random.key(0), model, x_T, SCHED, num_steps=4, eta=-0.5)
  with pytest.raises(ValueError, match="num_steps"):
    karras.euler(None, model, x_T, SCHED, num_steps=0)
  with pytest.raises(ValueError, match="spacing"):
    karras.euler(None, model, x_T, SCHED, num_steps=4, spacing="nope")
  with pytest.raises(ValueError, match="prediction"):
    karras.euler(None, model, x_T, SCHED, num_steps=4, prediction="noise")
