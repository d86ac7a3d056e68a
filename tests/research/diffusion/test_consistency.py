"""Consistency-model parameterization, grids, curricula, distances, teacher steps and sampling."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import special

from research.diffusion import consistency as cm
from research.diffusion import samplers, schedules
from research.nets.mlp import VelocityMLP, functional

SD, SMIN, SMAX = 0.5, 0.002, 80.0


def _random_net(seed=0, dim=2):
  params, apply = functional(VelocityMLP(dim, (16, 16), time_dim=8,
                                         rngs=nnx.Rngs(params=jax.random.key(seed))))
  # Scale the weights up so F is far from 0: the boundary must not rely on a small F.
  params = jax.tree.map(lambda p: 10.0 * p, params)
  return params, apply


# -- parameterization -----------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_boundary_condition_is_exact_for_random_params(seed):
  params, apply = _random_net(seed)
  f = jax.jit(cm.consistency_fn(apply, params))
  x = 3.0 * jax.random.normal(jax.random.key(seed + 10), (64, 2))
  out = f(x, jnp.full((64,), SMIN, jnp.float32))
  np.testing.assert_array_equal(np.asarray(out), np.asarray(x))
  assert not np.allclose(f(x, jnp.full((64,), 0.5)), x)   # away from smin F matters


def test_scalings_match_the_formulas():
  s = np.array([SMIN, 0.01, 0.1, 0.5, 1.0, 5.0, 80.0], np.float64)
  c_skip, c_out, c_in, c_noise = (np.asarray(c) for c in cm.scalings(jnp.asarray(s, jnp.float32)))
  np.testing.assert_allclose(c_skip, SD**2 / ((s - SMIN) ** 2 + SD**2), rtol=1e-6)
  np.testing.assert_allclose(c_out, SD * (s - SMIN) / np.sqrt(s**2 + SD**2), rtol=1e-5, atol=1e-9)
  np.testing.assert_allclose(c_in, 1.0 / np.sqrt(s**2 + SD**2), rtol=1e-6)
  np.testing.assert_allclose(c_noise, np.log(s) / 4, rtol=1e-6)
  assert c_skip[0] == 1.0 and c_out[0] == 0.0
  # Far from smin they approach EDM's preconditioning (sigma_min -> 0).
  np.testing.assert_allclose(c_skip[-1], SD**2 / (80.0**2 + SD**2), rtol=1e-3)
  # sigma_data is respected.
  c_skip2, c_out2, _, _ = cm.scalings(jnp.float32(1.0), sigma_data=1.0)
  np.testing.assert_allclose(c_skip2, 1.0 / ((1.0 - SMIN) ** 2 + 1.0), rtol=1e-6)
  np.testing.assert_allclose(c_out2, (1.0 - SMIN) / math.sqrt(2.0), rtol=1e-6)
  with pytest.raises(ValueError, match="sigma_data"):
    cm.scalings(1.0, sigma_data=0.0)


# -- grids and curricula -------------------------------------------------------------
def test_karras_sigmas_formula_endpoints_and_traced_num_points():
  n = 18
  s = np.asarray(cm.karras_sigmas(jnp.arange(n), n))
  i = np.arange(n)
  ref = (SMIN ** (1 / 7) + i / (n - 1) * (SMAX ** (1 / 7) - SMIN ** (1 / 7))) ** 7
  np.testing.assert_allclose(s, ref, rtol=2e-5)
  assert s[0] == np.float32(SMIN) and s[-1] == np.float32(SMAX) and np.all(np.diff(s) > 0)
  traced = jax.jit(lambda k: cm.karras_sigmas(jnp.arange(n), k))(jnp.int32(n))
  np.testing.assert_allclose(np.asarray(traced), s, rtol=1e-6)   # jit may differ by an ulp
  with pytest.raises(ValueError, match="num_points"):
    cm.karras_sigmas(0, 1)


def test_original_ct_curriculum_and_target_decay_at_hand_computed_steps():
  # K = 1000, s0 = 2, s1 = 150: N(k) = ceil(sqrt(k/K (151^2 - 4) + 4) - 1) + 1.
  #   k = 0:    sqrt(4) = 2           -> ceil(1) + 1 = 2
  #   k = 100:  sqrt(2283.7) = 47.79  -> ceil(46.79) + 1 = 48
  #   k = 500:  sqrt(11402.5) = 106.78 -> ceil(105.78) + 1 = 107
  #   k = 1000: sqrt(22801) = 151     -> 150 + 1 = 151
  ks = jnp.array([0, 100, 500, 1000, 5000])
  n = np.asarray(cm.ct_num_points(ks, 1000, s0=2, s1=150))
  np.testing.assert_array_equal(n, [2, 48, 107, 151, 151])
  mu = np.asarray(cm.ct_target_decay(jnp.array([2, 48, 151]), s0=2, mu0=0.9))
  np.testing.assert_allclose(mu, np.exp(2 * np.log(0.9) / np.array([2, 48, 151])), rtol=1e-6)
  np.testing.assert_allclose(mu[0], 0.9, rtol=1e-6)          # mu(0) = mu0 when N(0) = s0
  assert np.all(np.diff(mu) > 0)
  with pytest.raises(ValueError, match="mu0"):
    cm.ct_target_decay(10, mu0=1.0)


def test_improved_ct_curriculum_at_hand_computed_steps():
  # K = 8000, s0 = 10, s1 = 1280: K' = floor(8000 / (log2(128) + 1)) = 1000.
  assert cm.ict_doubling_period(8000) == 1000
  ks = jnp.array([0, 999, 1000, 2500, 6999, 7000, 7999, 10**6])
  n = np.asarray(jax.jit(lambda k: cm.ict_num_points(k, 8000))(ks))
  np.testing.assert_array_equal(n, [11, 11, 21, 41, 641, 1281, 1281, 1281])
  # K = 100, s0 = 10, s1 = 40: K' = floor(100 / 3) = 33.
  np.testing.assert_array_equal(cm.ict_num_points(jnp.array([32, 33, 66, 99]), 100, s0=10, s1=40),
                                [11, 21, 41, 41])


def test_lognormal_index_probabilities_sum_to_one_and_match_the_formula():
  n, max_points = 11, 20
  p = np.asarray(jax.jit(lambda k: cm.lognormal_index_probs(k, max_points))(jnp.int32(n)))
  assert p.shape == (max_points - 1,)
  np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-6)
  assert np.all(p[n - 1:] == 0) and np.all(p[:n - 1] > 0)
  i = np.arange(n)
  s = (SMIN ** (1 / 7) + i / (n - 1) * (SMAX ** (1 / 7) - SMIN ** (1 / 7))) ** 7
  cdf = special.erf((np.log(s) - (-1.1)) / (np.sqrt(2) * 2.0))
  ref = np.diff(cdf) / np.sum(np.diff(cdf))
  np.testing.assert_allclose(p[:n - 1], ref, rtol=1e-4, atol=1e-7)


def test_ict_weight_and_pseudo_huber():
  np.testing.assert_allclose(cm.ict_weight(jnp.float32(1.0), jnp.float32(1.25)), 4.0)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(5, 3, 4)), jnp.float32)
  y = x + jnp.asarray(rng.normal(size=(5, 3, 4)), jnp.float32)
  c = cm.pseudo_huber_c(12)
  np.testing.assert_allclose(c, 0.00054 * math.sqrt(12))
  huber = jax.jit(cm.pseudo_huber)
  sq = np.sum(np.asarray(x - y, np.float64).reshape(5, -1) ** 2, -1)
  np.testing.assert_allclose(huber(x, y), np.sqrt(sq + c * c) - c, rtol=1e-5)
  # Small differences: ~ ||x - y||^2 / (2c); large: ~ ||x - y|| - c.
  tiny = x + 1e-6 * (y - x)
  sq_tiny = np.sum(np.asarray(tiny - x, np.float64).reshape(5, -1) ** 2, -1)
  np.testing.assert_allclose(huber(tiny, x), sq_tiny / (2 * c), rtol=1e-3)
  np.testing.assert_allclose(huber(x, y), np.sqrt(sq) - c, rtol=1e-3)
  with pytest.raises(ValueError, match="same shape"):
    cm.pseudo_huber(x, y[:, :2])


# -- teacher steps -------------------------------------------------------------------
def _point_mass_eps_model(x_star, schedule):
  """The exact eps-prediction of a diffusion model whose data is the single point x_star."""
  def model_fn(x_t, t):
    alpha, sigma = schedule.alpha(t)[:, None], schedule.sigma(t)[:, None]
    return (x_t - alpha * x_star) / sigma
  return model_fn


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_teacher_step_on_a_point_mass_follows_the_exact_ode(solver):
  # Data = x*: the PF-ODE is x(s) = x* + s/s0 (x(s0) - x*), a straight line, so one
  # Euler or Heun step is exact; the teacher is a VP (discrete DDPM) eps-model.
  schedule = schedules.discrete_vp(schedules.linear_betas(1000))
  x_star = jnp.array([1.0, -2.0])
  denoiser = cm.denoiser_from_diffusion(_point_mass_eps_model(x_star, schedule), schedule, "eps")
  x = x_star + 3.0 * jnp.asarray(np.random.default_rng(0).normal(size=(8, 2)), jnp.float32)
  s_from, s_to = jnp.full((8,), 3.0), jnp.linspace(0.05, 2.0, 8)
  d, out = jax.jit(lambda x: (denoiser(x, s_from),
                              cm.teacher_step(denoiser, x, s_from, s_to, solver=solver)))(x)
  np.testing.assert_allclose(d, jnp.broadcast_to(x_star, x.shape), atol=2e-4)
  ref = x_star + (s_to / s_from)[:, None] * (x - x_star)
  np.testing.assert_allclose(out, ref, atol=2e-4)
  with pytest.raises(ValueError, match="solver"):
    cm.teacher_step(denoiser, x, s_from, s_to, solver="rk4")


# -- multistep sampling --------------------------------------------------------------
def test_multistep_sampler_first_step_and_noise_scale():
  key, n = jax.random.key(3), 4096
  z = jax.random.normal(jax.random.key(4), (n, 2))
  identity = lambda x, s: x
  one = jax.jit(lambda z: cm.multistep_sample(key, identity, z, jnp.array([SMAX])))(z)
  np.testing.assert_allclose(one, SMAX * z, rtol=1e-6)
  # f = 0 at tau_0 and the identity afterwards exposes the re-noising x + sqrt(tau^2 - smin^2) z_n.
  tau = jnp.array([SMAX, 0.8, 0.3])
  recorder = lambda x, s: jnp.where((s >= SMAX)[:, None], 0.0, x)
  out = np.asarray(jax.jit(lambda k: cm.multistep_sample(k, recorder, z, tau))(key))
  scale = lambda t: math.sqrt(t * t - SMIN * SMIN)
  ref = (scale(0.8) * samplers.per_example_normal(key, 1, z)
         + scale(0.3) * samplers.per_example_normal(key, 2, z))
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.std(), math.sqrt(scale(0.8) ** 2 + scale(0.3) ** 2), rtol=0.03)
  # The default 2-step levels: sigma_max and the middle of a 3-point Karras grid.
  np.testing.assert_allclose(cm.sample_sigmas(2), [SMAX, (0.5 * (SMIN ** (1 / 7) + SMAX ** (1 / 7))) ** 7],
                             rtol=1e-5)


def test_registry_sampler_matches_multistep_sample_on_the_ve_schedule():
  params, apply = functional(VelocityMLP(2, (16, 16), time_dim=8, rngs=nnx.Rngs(params=jax.random.key(5))))
  f = cm.consistency_fn(apply, params)
  schedule = schedules.ve(SMIN, SMAX)
  # The contract's model_fn(x, t): the consistency function at sigma(t) = smin (smax/smin)^t.
  model_fn = lambda x, t: f(x, schedule.sigma(t))
  key, z = jax.random.key(0), jax.random.normal(jax.random.key(1), (16, 2))
  sampler = samplers.get("consistency")
  out = jax.jit(lambda z: sampler(key, model_fn, SMAX * z, schedule, num_steps=3,
                                  prediction="x0"))(z)
  ref = jax.jit(lambda z: cm.multistep_sample(key, f, z, cm.sample_sigmas(3)))(z)
  np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-3)   # t <-> sigma round trips
  assert samplers.nfe("consistency", 3) == 3 and "consistency" in samplers.NAMES
  with pytest.raises(ValueError, match="prediction"):
    sampler(key, model_fn, z, schedule, num_steps=1, prediction="eps")


def test_snap_to_grid_picks_the_nearest_level_in_log_sigma():
  grid = np.asarray(cm.karras_sigmas(jnp.arange(18), 18))
  out = np.asarray(cm.snap_to_grid(jnp.array([80.0, 2.52, 2.0, 1e-4]), 18))
  np.testing.assert_allclose(out, [80.0, grid[9], grid[8], grid[1]], rtol=1e-6)
