"""rwm, mala, hmc, nuts and run_chains: moments with MCSE thresholds, invariance from exact
draws, supports and NaN, gradient counts, pytrees, jit / vmap (fixed keys throughout)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from research import mcmc

LOC = np.array([0.0, 3.0])
SCALES = np.array([1.0, 2.0])
RHO = 0.75
COV = np.array([[1.0, RHO * 2.0], [RHO * 2.0, 4.0]])
PRECISION = np.linalg.inv(COV)


def correlated_logdensity(x):
  d = x - LOC
  return -0.5 * d @ PRECISION @ d


def std_normal(x):
  return -0.5 * jnp.sum(x ** 2)


KERNELS = {
    "rwm": lambda lp: mcmc.rwm(lp, 1.5),
    "mala": lambda lp: mcmc.mala(lp, 0.4),
    "hmc": lambda lp: mcmc.hmc(lp, 0.3, 8),
    "nuts": lambda lp: mcmc.nuts(lp, 0.5),
}


@pytest.mark.parametrize("name", list(KERNELS))
def test_correlated_gaussian_means_within_three_mcse(name):
  kernel = KERNELS[name](correlated_logdensity)
  num_steps = 6000 if name == "rwm" else 2000
  samples, info = mcmc.run_chains(jax.random.key(1), kernel, jnp.zeros((4, 2)), num_steps,
                                  num_warmup=200)
  samples = np.asarray(samples)
  assert samples.shape == (4, num_steps, 2)
  z = np.abs(samples.mean((0, 1)) - LOC) / mcmc.mcse(samples)
  assert np.all(z < 3), z
  assert np.all(mcmc.rhat(samples) < 1.02)
  variances = samples.reshape(-1, 2).var(0)
  np.testing.assert_allclose(variances, SCALES ** 2, rtol=0.15)
  assert float(info.is_divergent.sum()) == 0
  assert 0.1 < float(info.acceptance_rate.mean()) <= 1.0


@pytest.mark.parametrize("name", ["mala", pytest.param("nuts", marks=pytest.mark.slow)])
def test_standard_normal_mean_and_variance(name):
  kernel = KERNELS[name](std_normal)
  samples, _ = mcmc.run_chains(jax.random.key(2), kernel, jnp.zeros((4, 3)), 1500,
                               num_warmup=100)
  samples = np.asarray(samples)
  assert np.all(np.abs(samples.mean((0, 1))) / mcmc.mcse(samples) < 3.5)
  np.testing.assert_allclose(samples.reshape(-1, 3).var(0), 1.0, rtol=0.12)


# A bimodal 1-D mixture: p = 0.4 N(-1, 0.5^2) + 0.6 N(1.5, 1).
MIX_W, MIX_MU, MIX_SD = np.array([0.4, 0.6]), np.array([-1.0, 1.5]), np.array([0.5, 1.0])


def mixture_logdensity(x):
  comps = (jnp.log(MIX_W) - 0.5 * ((x[0] - MIX_MU) / MIX_SD) ** 2 - jnp.log(MIX_SD))
  return jax.nn.logsumexp(comps)


def mixture_cdf(x):
  return sum(w * stats.norm.cdf(x, m, s) for w, m, s in zip(MIX_W, MIX_MU, MIX_SD))


@pytest.mark.parametrize("name,kernel", [
    ("rwm", mcmc.rwm(mixture_logdensity, 2.0)),
    ("mala", mcmc.mala(mixture_logdensity, 0.6)),
    ("hmc", mcmc.hmc(mixture_logdensity, 0.9, 3)),
    ("nuts", mcmc.nuts(mixture_logdensity, 0.9)),
])
def test_exact_draws_stay_exact(name, kernel):
  """Detailed balance makes the target invariant: 20000 chains started at exact draws of a
  bimodal mixture are still exact after 5 steps with a large step (KS p > 1e-3; the
  unadjusted Langevin chain below is rejected at p < 1e-6)."""
  rng = np.random.default_rng(0)
  n = 20000
  comp = rng.choice(2, n, p=MIX_W)
  x0 = (MIX_MU[comp] + MIX_SD[comp] * rng.standard_normal(n))[:, None].astype(np.float32)
  samples, info = mcmc.run_chains(jax.random.key(3), kernel, jnp.asarray(x0), 5)
  last = np.asarray(samples[:, -1, 0])
  assert stats.kstest(last, mixture_cdf).pvalue > 1e-3
  moved = float(info.is_accepted.mean())
  assert moved > 0.3, moved


def test_unadjusted_langevin_fails_the_same_check():
  """The invariance check can fail: MALA's proposal without the accept step is biased."""
  rng = np.random.default_rng(0)
  n = 20000
  comp = rng.choice(2, n, p=MIX_W)
  x = jnp.asarray(MIX_MU[comp] + MIX_SD[comp] * rng.standard_normal(n))
  grad = jax.vmap(jax.grad(lambda v: mixture_logdensity(v[None])))
  key = jax.random.key(3)
  for i in range(5):
    x = x + 0.6 * grad(x) + jnp.sqrt(1.2) * jax.random.normal(jax.random.fold_in(key, i), (n,))
  assert stats.kstest(np.asarray(x), mixture_cdf).pvalue < 1e-6


def positive_half_line(x):   # Exponential(1) on x > 0, -inf outside
  return jnp.where(x[0] > 0, -x[0], -jnp.inf)


@pytest.mark.parametrize("kernel", [
    mcmc.rwm(positive_half_line, 1.0), mcmc.mala(positive_half_line, 0.5),
    mcmc.hmc(positive_half_line, 0.5, 4), mcmc.nuts(positive_half_line, 0.5)],
    ids=["rwm", "mala", "hmc", "nuts"])
def test_constrained_support_is_never_left(kernel):
  samples, info = mcmc.run_chains(jax.random.key(4), kernel, jnp.full((4, 1), 0.5), 1500)
  samples = np.asarray(samples)
  assert np.all(samples > 0)
  assert float(info.is_accepted.mean()) > 0.2
  assert abs(samples.mean() - 1.0) < 4 * float(mcmc.mcse(samples[..., 0]))


def nan_above_one(x):   # a standard normal whose log-density is NaN for x > 1
  return jnp.where(x[0] > 1.0, jnp.nan, -0.5 * x[0] ** 2)


@pytest.mark.parametrize("kernel", [
    mcmc.rwm(nan_above_one, 1.0), mcmc.mala(nan_above_one, 0.5),
    mcmc.hmc(nan_above_one, 0.5, 4), mcmc.nuts(nan_above_one, 0.5)],
    ids=["rwm", "mala", "hmc", "nuts"])
def test_nan_logdensity_is_never_accepted(kernel):
  samples, info = mcmc.run_chains(jax.random.key(5), kernel, jnp.zeros((4, 1)), 1000)
  assert np.all(np.asarray(samples) <= 1.0)
  assert np.all(np.isfinite(np.asarray(info.acceptance_rate)))
  assert float(info.is_accepted.mean()) > 0.2


def funnel(x):   # Neal's funnel: v ~ N(0, 3^2), x_i | v ~ N(0, e^v), 9 x's
  v, rest = x[0], x[1:]
  return -v ** 2 / 18 - 0.5 * jnp.sum(rest ** 2) * jnp.exp(-v) - 0.5 * rest.shape[0] * v


def test_funnel_divergences_are_reported():
  x0 = jnp.zeros((2, 10))
  _, info = mcmc.run_chains(jax.random.key(6), mcmc.nuts(funnel, 1.0, max_tree_depth=6), x0,
                            200)
  assert int(info.is_divergent.sum()) > 0
  _, info = mcmc.run_chains(jax.random.key(6), mcmc.hmc(funnel, 1.0, 10), x0, 200)
  assert int(info.is_divergent.sum()) > 0


def test_gradient_counts_are_exact():
  """Count the log-density's forward evaluations with a callback: each gradient costs one."""
  calls = []

  def counted(x):
    jax.debug.callback(lambda: calls.append(1))
    return correlated_logdensity(x)

  expected_per_step = {"rwm": None, "mala": 1, "hmc": 8}
  for name, make in KERNELS.items():
    kernel = make(counted)
    state = kernel.init(jnp.zeros(2))
    step = jax.jit(kernel.step)
    calls.clear()
    total = 0
    for i in range(20):
      state, info = step(jax.random.key(i), state)
      jax.block_until_ready(state)
      total += int(info.num_grad_evals)
      if expected_per_step.get(name):
        assert int(info.num_grad_evals) == expected_per_step[name]
    jax.effects_barrier()
    if name == "rwm":
      assert total == 0 and len(calls) == 20      # one log-density, no gradient, per step
    else:
      assert len(calls) == total, (name, len(calls), total)
    if name == "nuts":
      assert total > 20


def test_nuts_tree_depth_bounds_the_steps():
  kernel = mcmc.nuts(std_normal, 1e-3, max_tree_depth=3)   # tiny steps: never turns
  _, info = mcmc.run_chains(jax.random.key(7), kernel, jnp.zeros((2, 2)), 10)
  np.testing.assert_array_equal(np.asarray(info.num_grad_evals), 2 ** 3 - 1)


def test_pytree_positions():
  def logdensity(p):
    return -0.5 * jnp.sum(p["w"] ** 2) - 0.5 * (p["b"] - 1.0) ** 2 / 0.25

  init = {"w": jnp.zeros((3, 2, 2)), "b": jnp.zeros(3)}
  for kernel in [mcmc.nuts(logdensity, 0.4, inverse_mass_matrix=jnp.ones(5)),
                 mcmc.mala(logdensity, 0.2)]:
    samples, info = mcmc.run_chains(jax.random.key(8), kernel, init, 1000, thin=2)
    assert samples["w"].shape == (3, 500, 2, 2) and samples["b"].shape == (3, 500)
    assert info.acceptance_rate.shape == (3, 500)
    b = np.asarray(samples["b"])
    assert abs(b.mean() - 1.0) < 4 * float(mcmc.mcse(b))
    np.testing.assert_allclose(np.asarray(samples["w"]).var((0, 1)), 1.0, rtol=0.25)
  state = mcmc.nuts(logdensity, 0.4).init({"w": jnp.zeros((2, 2)), "b": jnp.zeros(())})
  assert jax.tree.structure(state.grad) == jax.tree.structure(state.position)


@pytest.mark.parametrize("name", list(KERNELS))
def test_jit_and_vmap_agree_with_the_plain_step(name):
  kernel = KERNELS[name](correlated_logdensity)
  positions = jnp.array([[0.0, 3.0], [1.0, 2.0], [-1.0, 4.0]])
  keys = jax.random.split(jax.random.key(9), 3)
  states = jax.vmap(kernel.init)(positions)
  batched, batched_info = jax.jit(jax.vmap(kernel.step))(keys, states)
  step = jax.jit(kernel.step)
  for c in range(3):
    state = kernel.init(positions[c])
    jitted, info = step(keys[c], state)
    np.testing.assert_allclose(jitted.position, batched.position[c], rtol=1e-5, atol=1e-5)
    assert int(info.num_grad_evals) == int(batched_info.num_grad_evals[c])
  if name != "nuts":   # NUTS's plain (un-jitted) while_loops compile as slowly as jit
    plain, _ = kernel.step(keys[0], kernel.init(positions[0]))
    np.testing.assert_allclose(plain.position, batched.position[0], rtol=1e-5, atol=1e-5)


def test_run_chains_thin_and_warmup_follow_one_chain():
  """run_chains keeps the states after steps w + thin, w + 2 thin, ... of fold_in(key_c, i)."""
  kernel = mcmc.mala(correlated_logdensity, 0.3)
  key = jax.random.key(10)
  samples, info = mcmc.run_chains(key, kernel, jnp.zeros((2, 2)), 7, num_warmup=3, thin=3)
  assert samples.shape == (2, 2, 2) and info.num_grad_evals.shape == (2, 2)
  np.testing.assert_array_equal(np.asarray(info.num_grad_evals), 3)
  chain_key = jax.random.split(key, 2)[1]
  state = kernel.init(jnp.zeros(2))
  kept = []
  for i in range(9):
    state, _ = kernel.step(jax.random.fold_in(chain_key, i), state)
    if i in (5, 8):
      kept.append(state.position)
  np.testing.assert_allclose(samples[1], np.stack(kept), rtol=1e-5, atol=1e-5)


def test_dense_and_diagonal_metrics():
  dense, diagonal = COV, np.diag(COV)
  for kernel in [mcmc.nuts(correlated_logdensity, 0.8, dense),
                 mcmc.hmc(correlated_logdensity, 0.6, 3, diagonal),
                 mcmc.mala(correlated_logdensity, 0.5, inverse_mass_matrix=dense),
                 mcmc.rwm(correlated_logdensity, 1.5, proposal_covariance=diagonal)]:
    if True:
      samples, _ = mcmc.run_chains(jax.random.key(11), kernel, jnp.tile(LOC, (4, 1)), 1000)
      samples = np.asarray(samples)
      z = np.abs(samples.mean((0, 1)) - LOC) / mcmc.mcse(samples)
      assert np.all(z < 3.5), z
      np.testing.assert_allclose(np.cov(samples.reshape(-1, 2).T), COV, atol=0.5)
