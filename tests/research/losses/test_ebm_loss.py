"""research/losses/ebm.py: the CD gradient on a Gaussian energy, Langevin on a known Gaussian,
clamping, the replay buffer, jit / vmap, and refusals naming the argument."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.losses import ebm


def _gaussian_energy(mu, s):
  """E(x) = |x - mu|^2 / (2 s^2), so exp(-E) is N(mu, s^2 I)."""
  return lambda x: jnp.sum(jnp.square(x - mu), axis=-1) / (2 * s ** 2)


def test_cd_gradient_equals_the_analytic_one_for_a_gaussian_energy():
  # dL/dmu = (mean x- - mean x+) / s^2,  dL/ds = -(mean |x+ - mu|^2 - mean |x- - mu|^2) / s^3
  k1, k2 = jax.random.split(jax.random.key(0))
  x_data = jax.random.normal(k1, (64, 2)) + 1.0
  x_model = 0.7 * jax.random.normal(k2, (48, 2)) - 0.5
  mu, s = jnp.array([0.3, -0.2]), 0.8

  def loss(mu, s):
    return ebm.cd_loss(_gaussian_energy(mu, s), x_data, x_model)[0]

  g_mu, g_s = jax.grad(loss, argnums=(0, 1))(mu, s)
  np.testing.assert_allclose(g_mu, (x_model.mean(0) - x_data.mean(0)) / s ** 2, rtol=1e-5)
  sq = lambda x: jnp.mean(jnp.sum(jnp.square(x - mu), -1))  # noqa: E731
  np.testing.assert_allclose(g_s, -(sq(x_data) - sq(x_model)) / s ** 3, rtol=1e-5)


def test_cd_gradient_vanishes_in_expectation_when_the_model_equals_the_data():
  # model samples from exp(-E) = N(mu, s^2) itself, data from the same law: E[dL/dmu] = 0;
  # the estimate's std is sqrt(2 / n) / s per coordinate (two independent means of n).
  mu, s, n = jnp.array([1.0, -2.0]), 0.5, 200_000
  k1, k2 = jax.random.split(jax.random.key(1))
  x_data = mu + s * jax.random.normal(k1, (n, 2))
  x_model = mu + s * jax.random.normal(k2, (n, 2))
  g = jax.grad(lambda m: ebm.cd_loss(_gaussian_energy(m, s), x_data, x_model)[0])(mu)
  assert np.all(np.abs(g) < 4 * np.sqrt(2 / n) / s), g
  # ... while a shifted model gets the likelihood gradient (mu_model - mu_data) / s^2
  g_off = jax.grad(lambda m: ebm.cd_loss(_gaussian_energy(m, s), x_data, x_model + 0.3)[0])(mu)
  np.testing.assert_allclose(g_off, jnp.full(2, 0.3 / s ** 2), atol=4 * np.sqrt(2 / n) / s)


def test_cd_loss_stops_gradients_into_the_negatives_and_adds_the_regulariser():
  energy = _gaussian_energy(jnp.zeros(2), 1.0)
  x_data, x_model = jnp.ones((4, 2)), 2.0 * jnp.ones((3, 2))
  g_model = jax.grad(lambda xm: ebm.cd_loss(energy, x_data, xm)[0])(x_model)
  np.testing.assert_array_equal(g_model, 0.0)
  loss, terms = ebm.cd_loss(energy, x_data, x_model, alpha=0.5)
  e_plus, e_minus = 1.0, 4.0        # |1,1|^2 / 2 and |2,2|^2 / 2
  assert float(terms["cd"]) == pytest.approx(e_plus - e_minus)
  assert float(terms["regulariser"]) == pytest.approx(e_plus ** 2 + e_minus ** 2)
  assert float(loss) == pytest.approx(e_plus - e_minus + 0.5 * (e_plus ** 2 + e_minus ** 2))


def test_langevin_reaches_the_mean_and_covariance_of_a_2d_gaussian():
  # exp(-E) = N(m, C) with C = diag(0.5^2, 1.0^2); ULA with step h has stationary
  # variance sigma^2 / (1 - h / (4 sigma^2)) per axis, so with h = 0.01 the bias is < 1%.
  m, sd = jnp.array([1.0, -1.0]), jnp.array([0.5, 1.0])
  energy = lambda x: jnp.sum(jnp.square((x - m) / sd), -1) / 2  # noqa: E731
  x0 = jnp.zeros((4000, 2))
  x, info = jax.jit(lambda k: ebm.langevin_chain(k, energy, x0, 1500, 0.01))(jax.random.key(2))
  mean_err = np.abs(np.asarray(x.mean(0) - m))
  assert np.all(mean_err < 4 * np.asarray(sd) / np.sqrt(4000) + 0.01), mean_err
  np.testing.assert_allclose(np.asarray(x.std(0)), np.asarray(sd), rtol=0.05)
  assert info["energy"].shape == (1500,) and info["final_energy"].shape == (4000,)
  assert abs(float(info["energy"][-1]) - 1.0) < 0.1     # E[E(x)] = d / 2 = 1 at equilibrium


def test_langevin_without_noise_is_gradient_descent_and_the_noise_scale_sets_the_temperature():
  energy = _gaussian_energy(jnp.zeros(2), 1.0)
  x0 = jnp.full((3, 2), 2.0)
  x, _ = ebm.langevin_chain(jax.random.key(0), energy, x0, 1, 0.2, 0.0)
  np.testing.assert_allclose(x, x0 - 0.1 * x0, rtol=1e-6)          # x - (h/2) (x - 0)
  # noise_scale^2 / step_size = T samples exp(-E / T): std sqrt(T) for the unit Gaussian
  x, _ = ebm.langevin_chain(jax.random.key(1), energy, jnp.zeros((4000, 2)), 800, 0.02,
                            np.sqrt(0.02 * 0.25))
  np.testing.assert_allclose(np.asarray(x.std(0)), 0.5, rtol=0.06)


def test_langevin_clamps_to_the_box_and_clips_gradients():
  energy = _gaussian_energy(jnp.full(2, 10.0), 1.0)    # pulls far outside [-1, 1]
  x, _ = ebm.langevin_chain(jax.random.key(0), energy, jnp.zeros((100, 2)), 50, 0.1,
                            clamp=(-1.0, 1.0))
  assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
  assert float(jnp.mean(x)) > 0.9
  # gradient clipped elementwise to 0.5: one noiseless step moves by (h / 2) 0.5 exactly
  x, info = ebm.langevin_chain(jax.random.key(0), energy, jnp.zeros((2, 2)), 1, 0.1, 0.0,
                               grad_clip=0.5)
  np.testing.assert_allclose(x, 0.025, rtol=1e-6)
  np.testing.assert_allclose(info["grad_norm"], 10 * np.sqrt(2), rtol=1e-6)   # before clipping


def test_langevin_is_one_scan_and_vmaps_over_independent_problems():
  energy = _gaussian_energy(jnp.zeros(2), 1.0)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(key, x0):
    return ebm.langevin_chain(key, energy, x0, 200, 0.05)[0]

  run(jax.random.key(0), jnp.zeros((8, 2)))
  run(jax.random.key(1), jnp.ones((8, 2)))
  keys = jax.random.split(jax.random.key(3), 4)
  batched = jax.vmap(run)(keys, jnp.zeros((4, 8, 2)))
  for i in range(4):
    np.testing.assert_allclose(batched[i], run(keys[i], jnp.zeros((8, 2))), rtol=1e-5, atol=1e-6)


def test_mala_corrects_the_discretisation_bias_that_langevin_keeps():
  # unit Gaussian, step h = 0.5: ULA's stationary variance is 1 / (1 - h / 4) = 1.143,
  # MALA's is exactly 1 (the accept / reject makes exp(-E) invariant).
  energy = _gaussian_energy(jnp.zeros(2), 1.0)
  x0 = jax.random.normal(jax.random.key(0), (4000, 2))
  x_ula, _ = jax.jit(lambda k: ebm.langevin_chain(k, energy, x0, 300, 0.5))(jax.random.key(1))
  x_mala, info = jax.jit(lambda k: ebm.mala_chain(k, energy, x0, 300, 0.5))(jax.random.key(1))
  np.testing.assert_allclose(np.asarray(x_ula.var(0)), 1 / (1 - 0.5 / 4), rtol=0.06)
  np.testing.assert_allclose(np.asarray(x_mala.var(0)), 1.0, rtol=0.06)
  assert 0.5 < float(info["acceptance_rate"].mean()) < 1.0
  assert info["energy"].shape == (300,) and info["final_energy"].shape == (4000,)
  np.testing.assert_allclose(info["final_energy"], energy(x_mala), rtol=1e-5)
  with pytest.raises(ValueError, match="step_size"):
    ebm.mala_chain(jax.random.key(0), energy, x0, 5, 0.0)
  with pytest.raises(ValueError, match="num_steps"):
    ebm.mala_chain(jax.random.key(0), energy, x0, 0, 0.1)


def test_replay_draw_reinitialises_with_probability_reinit_prob_and_write_back_replaces():
  buffer = jnp.full((1000, 2), 7.0)
  x0, idx, reinit = ebm.replay_draw(jax.random.key(0), buffer, 800, 0.25, -1.0, 1.0)
  assert len(set(np.asarray(idx).tolist())) == 800                 # distinct entries
  frac = float(reinit.mean())
  assert abs(frac - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 800)
  np.testing.assert_array_equal(np.asarray(x0[~reinit]), 7.0)
  fresh = np.asarray(x0[reinit])
  assert fresh.min() >= -1.0 and fresh.max() <= 1.0
  x0, _, reinit = ebm.replay_draw(jax.random.key(0), buffer, 10, 0.0, -1.0, 1.0)
  assert not bool(reinit.any())
  _, _, reinit = ebm.replay_draw(jax.random.key(0), buffer, 10, 1.0, -1.0, 1.0)
  assert bool(reinit.all())
  new = ebm.replay_write(buffer, idx, jnp.zeros((800, 2)))
  assert int(jnp.sum(jnp.all(new == 0.0, -1))) == 800
  assert int(jnp.sum(jnp.all(new == 7.0, -1))) == 200


def test_grid_log_partition_normalises_a_known_gaussian():
  axis = np.linspace(-6, 6, 241)
  xx, yy = np.meshgrid(axis, axis)
  grid = np.stack([xx.ravel(), yy.ravel()], -1)
  energy = _gaussian_energy(jnp.zeros(2), 1.0)
  log_z = ebm.grid_log_partition(energy(jnp.asarray(grid, jnp.float32)), (axis[1] - axis[0]) ** 2)
  assert float(log_z) == pytest.approx(np.log(2 * np.pi), abs=1e-4)   # Z of exp(-|x|^2/2)


@pytest.mark.parametrize("call, match", [
    (lambda e, x: ebm.langevin_chain(jax.random.key(0), e, x, 5, 0.0), "step_size"),
    (lambda e, x: ebm.langevin_chain(jax.random.key(0), e, x, 5, -1.0), "step_size"),
    (lambda e, x: ebm.langevin_chain(jax.random.key(0), e, x, 0, 0.1), "num_steps"),
    (lambda e, x: ebm.langevin_chain(jax.random.key(0), e, x, 2.5, 0.1), "num_steps"),
    (lambda e, x: ebm.langevin_chain(jax.random.key(0), e, x, 5, 0.1, -0.1), "noise_scale"),
    (lambda e, x: ebm.langevin_chain(jax.random.key(0), e, x, 5, 0.1, grad_clip=0.0), "grad_clip"),
    (lambda e, x: ebm.langevin_chain(jax.random.key(0), e, x, 5, 0.1, clamp=(1.0, -1.0)), "clamp"),
    (lambda e, x: ebm.langevin_chain(jax.random.key(0), e, x[0], 5, 0.1), "x0"),
    (lambda e, x: ebm.replay_draw(jax.random.key(0), x, 2, 1.5, -1.0, 1.0), "reinit_prob"),
    (lambda e, x: ebm.replay_draw(jax.random.key(0), x, 2, -0.1, -1.0, 1.0), "reinit_prob"),
    (lambda e, x: ebm.replay_draw(jax.random.key(0), x, 9, 0.5, -1.0, 1.0), "batch_size"),
    (lambda e, x: ebm.cd_loss(e, x, x, alpha=-1.0), "alpha"),
    (lambda e, x: ebm.grid_log_partition(jnp.zeros(3), 0.0), "cell_area"),
])
def test_bad_arguments_raise_value_errors_naming_them(call, match):
  energy = _gaussian_energy(jnp.zeros(2), 1.0)
  with pytest.raises(ValueError, match=match):
    call(energy, jnp.zeros((4, 2)))
