"""Tests for research/diffusion/schedules.py (t = 1 noise, t = 0 data)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from research.diffusion import schedules as S

T = 1000
DISCRETE_LINEAR = S.discrete_vp(S.linear_betas(T))
VP_SCHEDULES = {
    "discrete_linear": DISCRETE_LINEAR,
    "discrete_cosine": S.discrete_vp(S.cosine_betas(T)),
    "discrete_scaled_linear": S.discrete_vp(S.scaled_linear_betas(T)),
    "continuous_vp": S.continuous_vp(),
    "cosine_vp": S.cosine_vp(),
}
ALL_SCHEDULES = {**VP_SCHEDULES, "ve": S.ve()}


@jax.jit
def _evaluate(schedule, t):
  """Every elementwise method at once, jitted with the schedule as a pytree argument."""
  lam = schedule.log_snr(t)
  s = schedule.edm_sigma(t)
  return {
      "alpha": schedule.alpha(t), "sigma": schedule.sigma(t), "log_snr": lam,
      "edm_sigma": s, "t_from_log_snr": schedule.t_from_log_snr(lam),
      "t_from_edm_sigma": schedule.t_from_edm_sigma(s), "model_time": schedule.model_time(t),
  }


def _grid(schedule, n=4001):
  return jnp.linspace(schedule.t_min, 1.0, n, dtype=jnp.float32)


# ---------------------------------------------------------------------------
# Betas.
# ---------------------------------------------------------------------------
def test_linear_betas_endpoints_and_spacing():
  b = np.asarray(S.linear_betas())
  assert b.shape == (1000,) and b.dtype == np.float32
  np.testing.assert_allclose([b[0], b[-1]], [1e-4, 0.02], rtol=1e-6)
  np.testing.assert_allclose(np.diff(b), (0.02 - 1e-4) / 999, rtol=1e-3)
  assert np.asarray(S.linear_betas(1)).tolist() == [np.float32(1e-4)]


def test_scaled_linear_betas_are_squares_of_a_linspace():
  b = np.asarray(S.scaled_linear_betas(), np.float64)
  np.testing.assert_allclose([b[0], b[-1]], [0.00085, 0.012], rtol=1e-6)
  np.testing.assert_allclose(np.diff(np.sqrt(b)), (math.sqrt(0.012) - math.sqrt(0.00085)) / 999,
                             rtol=1e-3)


def test_cosine_alpha_bar_matches_nichol_dhariwal_closed_form():
  s = 0.008
  b = np.asarray(S.cosine_betas(T, s=s), np.float64)
  assert np.all(b > 0) and np.all(b <= 0.999 + 1e-7)
  f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2) ** 2
  n = np.arange(T)
  expected = f((n + 1) / T) / f(0.0)
  clipped = np.argmax(b >= 0.999 - 1e-7)  # only the last beta(s) hit max_beta
  assert clipped >= T - 2
  alpha_bar = np.asarray(VP_SCHEDULES["discrete_cosine"].alpha_bar_table, np.float64)
  np.testing.assert_allclose(alpha_bar[:clipped], expected[:clipped], rtol=2e-5, atol=1e-9)
  np.testing.assert_allclose(np.cumprod(1 - b)[:clipped], expected[:clipped], rtol=2e-5,
                             atol=1e-9)


@pytest.mark.parametrize("fn,kw,name", [
    (S.linear_betas, {"T": 0}, "T"),
    (S.linear_betas, {"beta_end": 1.0}, "beta_end"),
    (S.linear_betas, {"beta_start": 0.0}, "beta_start"),
    (S.scaled_linear_betas, {"beta_start": -0.1}, "beta_start"),
    (S.cosine_betas, {"max_beta": 1.5}, "max_beta"),
    (S.cosine_betas, {"T": True}, "T"),
])
def test_bad_beta_arguments(fn, kw, name):
  with pytest.raises(ValueError, match=name):
    fn(**kw)


@pytest.mark.parametrize("betas", [np.array([0.1, 1.0]), np.array([0.0, 0.5]),
                                   np.array([[0.1, 0.2]]), np.array([]),
                                   np.array([0.1, np.nan])])
def test_discrete_vp_refuses_bad_betas(betas):
  with pytest.raises(ValueError, match="betas"):
    S.discrete_vp(betas)


@pytest.mark.parametrize("fn,kw,name", [
    (S.continuous_vp, {"beta_min": 0.0}, "beta_min"),
    (S.continuous_vp, {"beta_min": 2.0, "beta_max": 1.0}, "beta_max"),
    (S.continuous_vp, {"t_min": 0.0}, "t_min"),
    (S.cosine_vp, {"max_time": 1.0}, "max_time"),
    (S.cosine_vp, {"s": -1.0}, "s"),
    (S.ve, {"sigma_min": 1.0, "sigma_max": 0.5}, "sigma_max"),
])
def test_bad_schedule_arguments(fn, kw, name):
  with pytest.raises(ValueError, match=name):
    fn(**kw)


# ---------------------------------------------------------------------------
# Schedule identities.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(VP_SCHEDULES))
def test_vp_identity_and_endpoints(name):
  sch = VP_SCHEDULES[name]
  t = jnp.linspace(0.0, 1.0, 2001, dtype=jnp.float32)
  out = _evaluate(sch, t)
  np.testing.assert_allclose(out["alpha"] ** 2 + out["sigma"] ** 2, 1.0, atol=2e-6)
  assert float(out["sigma"][0]) == 0.0 and float(out["alpha"][0]) == 1.0
  assert float(out["edm_sigma"][0]) == 0.0
  assert float(out["log_snr"][0]) == np.inf  # lambda(0) = +inf: clean data
  assert sch.t_max == 1.0 and sch.is_vp
  assert 0.0 < float(out["alpha"][-1]) < 0.1  # t = 1 is (almost) pure noise (SD: 0.068)


@pytest.mark.parametrize("name", sorted(ALL_SCHEDULES))
def test_log_snr_strictly_decreasing_and_consistent(name):
  sch = ALL_SCHEDULES[name]
  out = _evaluate(sch, _grid(sch))
  lam = np.asarray(out["log_snr"], np.float64)
  assert np.all(np.isfinite(lam))
  assert np.all(np.diff(lam) < 0)
  np.testing.assert_allclose(np.log(out["alpha"]) - np.log(out["sigma"]), lam, rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(out["edm_sigma"], np.exp(-lam), rtol=1e-5)


@pytest.mark.parametrize("name", sorted(ALL_SCHEDULES))
def test_inverses_round_trip(name):
  sch = ALL_SCHEDULES[name]
  t = _grid(sch)
  out = _evaluate(sch, t)
  np.testing.assert_allclose(out["t_from_log_snr"], t, atol=1e-5)
  np.testing.assert_allclose(out["t_from_edm_sigma"], t, atol=1e-5)
  # and the other way round: lambda -> t -> lambda on the schedule's lambda range
  lam = jnp.linspace(out["log_snr"][-1], out["log_snr"][0], 513)
  lam_back = jax.jit(lambda s, l: s.log_snr(s.t_from_log_snr(l)))(sch, lam)
  np.testing.assert_allclose(lam_back, lam, atol=2e-4, rtol=1e-4)


def test_discrete_schedule_matches_alpha_bar_at_grid_points():
  betas = np.asarray(S.linear_betas(T), np.float64)
  alpha_bar = np.cumprod(1.0 - betas)
  t_n = jnp.asarray((np.arange(T) + 1.0) / T, jnp.float32)
  out = _evaluate(DISCRETE_LINEAR, t_n)
  np.testing.assert_allclose(out["alpha"] ** 2, alpha_bar, rtol=2e-6)
  np.testing.assert_allclose(out["sigma"] ** 2, 1 - alpha_bar, rtol=2e-6, atol=1e-9)
  np.testing.assert_allclose(out["model_time"], np.arange(T), atol=1e-4)
  np.testing.assert_allclose(DISCRETE_LINEAR.alpha_bar_table, alpha_bar, rtol=2e-6)
  assert DISCRETE_LINEAR.num_train_steps == T and DISCRETE_LINEAR.t_min == 1.0 / T
  assert DISCRETE_LINEAR.is_discrete


def test_discrete_log_alpha_piecewise_linear_between_knots():
  la = jax.jit(lambda s, t: s.log_alpha(t))
  n = np.arange(T - 1)
  knots = jnp.asarray((n + 1.0) / T, jnp.float32)
  mids = jnp.asarray((n + 1.5) / T, jnp.float32)
  np.testing.assert_allclose(la(DISCRETE_LINEAR, mids),
                             0.5 * (la(DISCRETE_LINEAR, knots) + la(DISCRETE_LINEAR, knots + 1 / T)),
                             rtol=1e-5, atol=1e-7)
  # between t = 0 and t_0 = 1/T: linear from 0 to 0.5 log(1 - beta_0)
  np.testing.assert_allclose(la(DISCRETE_LINEAR, jnp.float32(0.5 / T)),
                             0.25 * np.log1p(-1e-4), rtol=1e-5)


def test_continuous_vp_closed_form_and_numerical_integral():
  bmin, bmax = 0.1, 20.0
  sch = S.continuous_vp(bmin, bmax)
  t = np.linspace(0.0, 1.0, 11)
  alpha = np.asarray(jax.jit(lambda s, t: s.alpha(t))(sch, jnp.asarray(t, jnp.float32)))
  np.testing.assert_allclose(alpha, np.exp(-0.25 * t**2 * (bmax - bmin) - 0.5 * t * bmin),
                             rtol=1e-6)
  beta = lambda u: bmin + u * (bmax - bmin)
  integral = np.array([integrate.quad(beta, 0.0, ti)[0] for ti in t])
  np.testing.assert_allclose(alpha ** 2, np.exp(-integral), rtol=1e-5)


def test_discrete_linear_is_close_to_continuous_vp():
  # DDPM's linear betas are the T = 1000 discretisation of beta(t) = 0.1 + 19.9 t.
  t = jnp.linspace(1e-3, 1.0, 101)
  la = jax.jit(lambda s, t: s.log_alpha(t))
  np.testing.assert_allclose(la(DISCRETE_LINEAR, t), la(S.continuous_vp(), t), atol=0.05)


def test_cosine_vp_closed_form():
  s, m = 0.008, 0.9946
  sch = S.cosine_vp(s, max_time=m)
  t = np.linspace(0.0, 1.0, 11)
  alpha = np.asarray(jax.jit(lambda c, t: c.alpha(t))(sch, jnp.asarray(t, jnp.float32)))
  f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2)
  np.testing.assert_allclose(alpha, f(m * t) / f(0.0), rtol=2e-5, atol=1e-7)


def test_ve_closed_form():
  sch = S.ve(0.002, 80.0)
  t = jnp.linspace(0.0, 1.0, 11)
  out = _evaluate(sch, t)
  np.testing.assert_allclose(out["sigma"], 0.002 * (80 / 0.002) ** np.asarray(t), rtol=1e-5)
  np.testing.assert_array_equal(out["alpha"], 1.0)
  np.testing.assert_allclose(out["edm_sigma"], out["sigma"], rtol=1e-6)
  np.testing.assert_allclose(out["model_time"], t)
  assert sch.t_min == 0.0 and not sch.is_vp and not sch.is_discrete


def test_schedule_is_a_pytree_with_static_kind():
  leaves, treedef = jax.tree.flatten(DISCRETE_LINEAR)
  assert len(leaves) == 2  # t_table and log_alpha_table; the unused fields are None
  back = jax.tree.unflatten(treedef, leaves)
  assert back.kind == "discrete" and back.num_train_steps == T
  # works under vmap over t and on any shape
  t = jnp.full((3, 4, 5), 0.5)
  assert DISCRETE_LINEAR.alpha(t).shape == (3, 4, 5)
  assert jax.vmap(S.continuous_vp().sigma)(t).shape == (3, 4, 5)
  with pytest.raises(ValueError, match="discrete"):
    S.continuous_vp().alpha_bar_table


def test_float64_inputs_keep_precision():
  with jax.enable_x64(True):
    t = jnp.linspace(1e-3, 1.0, 7, dtype=jnp.float64)
    sch = S.continuous_vp()
    assert sch.log_snr(t).dtype == jnp.float64
    np.testing.assert_allclose(sch.t_from_log_snr(sch.log_snr(t)), t, atol=1e-12)


# ---------------------------------------------------------------------------
# Step selection.
# ---------------------------------------------------------------------------
CONTINUOUS_SPACINGS = ("time_uniform", "logsnr_uniform", "time_quadratic", "karras")


def test_spacing_names():
  assert set(S.SPACINGS) == set(CONTINUOUS_SPACINGS) | {"leading", "trailing", "linspace"}


@pytest.mark.parametrize("name", sorted(ALL_SCHEDULES))
@pytest.mark.parametrize("spacing", CONTINUOUS_SPACINGS)
def test_continuous_spacings_shape_order_endpoints(name, spacing):
  sch = ALL_SCHEDULES[name]
  for num_steps in (1, 2, 10, 100):
    t = np.asarray(S.timesteps(sch, num_steps, spacing))
    assert t.shape == (num_steps + 1,) and t.dtype == np.float32
    assert t[0] == 1.0 and t[-1] == np.float32(sch.t_min)
    assert np.all(np.diff(t) < 0), (num_steps, t)
    assert len(np.unique(t)) == num_steps + 1


def test_time_uniform_and_quadratic_define_their_grids():
  sch = S.continuous_vp()
  t = np.asarray(S.timesteps(sch, 8, "time_uniform"), np.float64)
  np.testing.assert_allclose(np.diff(t), (1e-3 - 1) / 8, rtol=1e-5)
  t = np.asarray(S.timesteps(sch, 8, "time_quadratic"), np.float64)
  np.testing.assert_allclose(np.diff(np.sqrt(t)), (math.sqrt(1e-3) - 1) / 8, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(ALL_SCHEDULES))
def test_logsnr_uniform_has_equal_lambda_gaps(name):
  sch = ALL_SCHEDULES[name]
  t = S.timesteps(sch, 10, "logsnr_uniform")
  lam = np.asarray(sch.log_snr(t), np.float64)
  gaps = np.diff(lam)
  np.testing.assert_allclose(gaps, gaps.mean(), rtol=2e-3)
  np.testing.assert_allclose(gaps.sum(), float(sch.log_snr(sch.t_min) - sch.log_snr(1.0)),
                             rtol=1e-5)


@pytest.mark.parametrize("name", ["discrete_linear", "continuous_vp", "ve"])
@pytest.mark.parametrize("rho", [7.0, 3.0])
def test_karras_matches_formula(name, rho):
  sch = ALL_SCHEDULES[name]
  n = 12
  t = S.timesteps(sch, n, "karras", rho=rho)
  smax, smin = float(sch.edm_sigma(1.0)), float(sch.edm_sigma(sch.t_min))
  i = np.arange(n + 1)
  expected = (smax ** (1 / rho) + i / n * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
  np.testing.assert_allclose(sch.edm_sigma(t), expected, rtol=2e-4)


def test_karras_on_ve_reproduces_edm_sigmas():
  # EDM's 18-step ladder from 80 down to 0.002 (Karras et al. 2022, eq. 5).
  sch = S.ve(0.002, 80.0)
  sigmas = np.asarray(sch.sigma(S.timesteps(sch, 17, "karras")))
  i = np.arange(18)
  expected = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
  np.testing.assert_allclose(sigmas, expected, rtol=1e-4)


# diffusers DDIMScheduler.set_timesteps (steps_offset = 0), T = 1000:
DIFFUSERS_GRIDS = {
    ("linspace", 10): [999, 888, 777, 666, 555, 444, 333, 222, 111, 0],
    ("leading", 10): [900, 800, 700, 600, 500, 400, 300, 200, 100, 0],
    ("trailing", 10): [999, 899, 799, 699, 599, 499, 399, 299, 199, 99],
    ("linspace", 7): [999, 832, 666, 500, 333, 166, 0],
    ("leading", 7): [852, 710, 568, 426, 284, 142, 0],
    ("trailing", 7): [999, 856, 713, 570, 428, 285, 142],
}


@pytest.mark.parametrize("spacing,num_steps", sorted(DIFFUSERS_GRIDS))
def test_discrete_spacings_match_diffusers(spacing, num_steps):
  expected = DIFFUSERS_GRIDS[(spacing, num_steps)]
  assert S.index_grid(T, num_steps, spacing).tolist() == expected
  t = np.asarray(S.timesteps(DISCRETE_LINEAR, num_steps, spacing), np.float64)
  assert t.shape == (num_steps + 1,)
  np.testing.assert_allclose(t[:-1] * T - 1, expected, atol=1e-3)
  assert t[-1] == 0.0  # default: the last step lands on clean data (alpha_bar = 1)
  assert np.all(np.diff(t) < 0)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("num_steps", [1, 3, 333, 999, 1000])
def test_discrete_spacings_have_no_duplicates(spacing, num_steps):
  grid = S.index_grid(T, num_steps, spacing)
  assert len(np.unique(grid)) == num_steps and np.all(np.diff(grid) < 0)
  assert grid.min() >= 0 and grid.max() <= T - 1
  t = np.asarray(S.timesteps(DISCRETE_LINEAR, num_steps, spacing))
  assert np.all(np.diff(t) < 0)
  if spacing == "trailing" or (spacing == "linspace" and num_steps > 1):
    assert t[0] == 1.0  # diffusers' linspace with one step evaluates at n = 0 only


def test_discrete_spacing_custom_t_end():
  t = S.timesteps(DISCRETE_LINEAR, 10, "trailing", t_end=1.0 / T)
  assert float(t[-1]) == np.float32(1.0 / T)
  with pytest.raises(ValueError, match="t_end"):
    S.timesteps(DISCRETE_LINEAR, 10, "leading", t_end=1.0 / T)  # = the last grid point


def test_continuous_custom_t_end():
  sch = S.continuous_vp()
  for spacing in ("time_uniform", "time_quadratic", "karras"):
    t = np.asarray(S.timesteps(sch, 5, spacing, t_end=0.0))
    assert t[-1] == 0.0 and np.all(np.diff(t) < 0)
  t = np.asarray(S.timesteps(sch, 5, "logsnr_uniform", t_end=0.01))
  assert t[-1] == np.float32(0.01)


def test_timesteps_under_jit_with_traced_schedule():
  f = jax.jit(lambda s: S.timesteps(s, 10, "logsnr_uniform"))
  np.testing.assert_allclose(f(DISCRETE_LINEAR), S.timesteps(DISCRETE_LINEAR, 10, "logsnr_uniform"),
                             rtol=1e-6)


@pytest.mark.parametrize("kwargs,name", [
    ({"num_steps": 0}, "num_steps"),
    ({"num_steps": 2.0}, "num_steps"),
    ({"num_steps": 5, "spacing": "cosine"}, "spacing"),
    ({"num_steps": 5, "rho": 0.0}, "rho"),
    ({"num_steps": 5, "t_end": 1.0}, "t_end"),
    ({"num_steps": 5, "t_end": -0.1}, "t_end"),
    ({"num_steps": 1001, "spacing": "trailing"}, "num_steps"),
])
def test_timesteps_bad_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    S.timesteps(DISCRETE_LINEAR, **kwargs)


def test_unknown_spacing_lists_valid_ones():
  with pytest.raises(ValueError, match="logsnr_uniform"):
    S.timesteps(DISCRETE_LINEAR, 5, "nope")


def test_discrete_spacing_needs_discrete_schedule():
  with pytest.raises(ValueError, match="discrete"):
    S.timesteps(S.continuous_vp(), 5, "trailing")


def test_logsnr_uniform_refuses_t_end_zero_on_vp():
  with pytest.raises(ValueError, match="t_end"):
    S.timesteps(S.continuous_vp(), 5, "logsnr_uniform", t_end=0.0)
