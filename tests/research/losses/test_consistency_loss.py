"""CT / iCT / CD losses: target construction, exactness on a tractable case, gradients, options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.diffusion import consistency as cm
from research.losses import consistency as losses

SMIN = cm.SIGMA_MIN
X_STAR = jnp.array([0.7, -1.3])


def _exact_point_mass_f(x_star):
  """The exact consistency function when the data is the single point x*.

  The PF-ODE trajectories are straight lines x(s) = x* + s z, whose end at smin is
  x* + smin z, so f(x, s) = x* + (smin/s)(x - x*) (and f(x, smin) = x).
  """
  return lambda x, s: x_star + (SMIN / s)[:, None] * (x - x_star)


def _as_network(f_exact):
  """F with c_skip x + c_out F = f_exact: the parameterization can represent f exactly."""
  def net_apply(params, x_in, c_noise):
    del params
    s = jnp.exp(4.0 * c_noise)
    c_skip, c_out, c_in, _ = cm.scalings(s)
    x = x_in / c_in[:, None]
    safe = jnp.where(c_out > 0, c_out, 1.0)[:, None]
    return jnp.where((c_out > 0)[:, None], (f_exact(x, s) - c_skip[:, None] * x) / safe, 0.0)
  return net_apply


def _batch(n=256):
  return jnp.broadcast_to(X_STAR, (n, 2))


@pytest.mark.parametrize("variant", ["ct", "ict"])
def test_loss_vanishes_for_the_exact_consistency_function_of_a_point_mass(variant):
  f = cm.consistency_fn(_as_network(_exact_point_mass_f(X_STAR)), None)
  key = jax.random.key(0)
  if variant == "ct":
    run = lambda k: losses.ct_loss(f, f, k, _batch(), num_points=18, max_points=18)
  else:
    run = lambda k: losses.ict_loss(f, k, _batch(), num_points=41, max_points=1281)
  loss, metrics = jax.jit(run)(key)
  assert float(loss) < 1e-6 and float(metrics["distance"]) < 1e-6
  # A function that is off by a constant is not a consistency function: the loss sees it
  # at sigma_min, where the target is pinned to x by the boundary condition.
  shifted = cm.consistency_fn(_as_network(lambda x, s: _exact_point_mass_f(X_STAR)(x, s) + 0.1),
                              None)
  bad, _ = jax.jit(lambda k: losses.ct_loss(shifted, shifted, k, _batch(), num_points=2,
                                            max_points=2))(key)
  assert float(bad) > 1e-3


def test_ct_target_uses_the_same_noise_and_the_lower_sigma():
  x0 = jax.random.normal(jax.random.key(1), (512, 2))
  # f(x, s) = (x - x0)/s recovers the shared z exactly from both x_hi and x_lo.
  recover_z = lambda x, s: (x - x0) / s[:, None]
  loss, _ = jax.jit(lambda k: losses.ct_loss(recover_z, recover_z, k, x0, num_points=11,
                                             max_points=11))(jax.random.key(2))
  assert float(loss) < 1e-8
  # f(x, s) = x - x0 gives s z: the l2 term is (s_{n+1} - s_n)^2 ||z||^2; with N = 2 the
  # only interval is [smin, smax], so the loss is (smax - smin)^2 E||z||^2 ~ 2 (smax - smin)^2.
  noise_of = lambda x, s: x - x0
  loss2, m = jax.jit(lambda k: losses.ct_loss(noise_of, noise_of, k, x0, num_points=2,
                                              max_points=2))(jax.random.key(3))
  np.testing.assert_allclose(float(loss2) / (80.0 - SMIN) ** 2, 2.0, rtol=0.15)
  np.testing.assert_allclose(m["sigma_hi"], 80.0)


def test_ict_gradient_flows_only_through_the_online_pass():
  x0 = jax.random.normal(jax.random.key(4), (64, 2))
  key = jax.random.key(5)
  f_of = lambda a: (lambda x, s: a * x)
  kw = dict(num_points=21, max_points=81)
  g_ict = jax.jit(jax.grad(lambda a: losses.ict_loss(f_of(a), key, x0, **kw)[0]))(1.3)
  # Same value with the target's parameter a constant copy: stop_gradient(theta).
  g_ref = jax.jit(jax.grad(lambda a: losses.consistency_loss(
      f_of(a), f_of(1.3), key, x0, index_distribution="lognormal", distance="pseudo_huber",
      weighting="ict", **kw)[0]))(1.3)
  np.testing.assert_allclose(g_ict, g_ref, rtol=1e-6)
  assert abs(float(g_ict)) > 0


def test_cd_loss_vanishes_with_an_exact_teacher_and_uses_the_teacher_step():
  x_star = X_STAR
  denoiser = lambda x, s: jnp.broadcast_to(x_star, x.shape)   # E[x0 | x] for a point mass
  f = cm.consistency_fn(_as_network(_exact_point_mass_f(x_star)), None)
  both = jax.jit(lambda k: [losses.cd_loss(f, f, denoiser, k, _batch(), num_points=18,
                                            max_points=18, solver=solver)[0]
                            for solver in ("euler", "heun")])(jax.random.key(6))
  assert max(float(v) for v in both) < 1e-6
  # With a teacher that stays put (D = x: zero velocity) x_lo = x_hi, so an identity f sees
  # no difference, while a CT target (x_lo = x0 + s_n z) would.
  stay = lambda x, s: x
  ident = lambda x, s: x
  loss, _ = jax.jit(lambda k: losses.cd_loss(ident, ident, stay, k, _batch(), num_points=5,
                                             max_points=5))(jax.random.key(7))
  assert float(loss) == 0.0


def test_lognormal_index_sampling_matches_its_probabilities():
  n, max_points, draws = 11, 16, 20000
  keys = jax.random.split(jax.random.key(8), draws)
  idx = jax.jit(jax.vmap(lambda k: losses.sample_index(k, n, max_points, "lognormal")))(keys)
  freq = np.bincount(np.asarray(idx), minlength=max_points - 1) / draws
  np.testing.assert_allclose(freq, cm.lognormal_index_probs(n, max_points), atol=0.015)
  uni = jax.jit(jax.vmap(lambda k: losses.sample_index(k, jnp.int32(n), max_points)))(keys)
  assert int(uni.min()) == 0 and int(uni.max()) == n - 2


def test_bad_options_raise_value_errors_naming_them():
  f = lambda x, s: x
  x0 = jnp.zeros((4, 2))
  for option, value in (("distance", "l1"), ("weighting", "snr"), ("index_distribution", "beta")):
    with pytest.raises(ValueError, match=option):
      losses.consistency_loss(f, f, jax.random.key(0), x0, num_points=5, max_points=5,
                              **{option: value})
  with pytest.raises(ValueError, match="num_points"):
    losses.ct_loss(f, f, jax.random.key(0), x0, num_points=9, max_points=5)
  with pytest.raises(ValueError, match="solver"):
    losses.cd_loss(f, f, f, jax.random.key(0), x0, num_points=5, max_points=5, solver="rk4")
