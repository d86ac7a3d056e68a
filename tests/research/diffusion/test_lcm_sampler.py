"""The `lcm` sampler (research/diffusion/lcm.py): LCM multistep sampling, diffusers' LCMScheduler.

Time convention: t = 1 noise, t = 0 data; a discrete schedule's DDPM index n is
t = (n + 1)/T. Peer-free tests check the closed forms (timestep table, boundary
scalings, one-step output), NFE, jit/vmap and refusals; the diffusers tests
(optional peer) compare step for step with the same noise (max abs diff < 2e-4
with diffusers' alphas_cumprod set to our float32 table: the first step's
x0 = (x - sigma eps)/alpha cancels in float32, 1/alpha(1) = 156 on the linear
schedule; < 5e-4 with diffusers' own float32 cumprod) and in
distribution with their own generators.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.data import toy
from research.diffusion import adapters, exact, lcm, samplers, schedules

T = 1000
LINEAR = schedules.discrete_vp(schedules.linear_betas(T))
SCALED = schedules.discrete_vp(schedules.scaled_linear_betas(T))
MIX = toy.mixture("ring8")
X_T = jax.random.normal(jax.random.PRNGKey(0), (32, 2))


def test_timestep_table_by_hand():
  """k = T // M, origin = (M..1) k - 1, n_i = origin[floor(i M / N)]."""
  np.testing.assert_array_equal(lcm.lcm_timesteps(1000, 1), [999])
  np.testing.assert_array_equal(lcm.lcm_timesteps(1000, 2), [999, 499])
  np.testing.assert_array_equal(lcm.lcm_timesteps(1000, 4), [999, 759, 499, 259])
  np.testing.assert_array_equal(lcm.lcm_timesteps(1000, 8),
                                [999, 879, 759, 639, 499, 379, 259, 139])
  # M = 20, k = 50: picks floor(0, 6.67, 13.3) = 0, 6, 13 -> 999, 699, 349.
  np.testing.assert_array_equal(lcm.lcm_timesteps(1000, 3, 20), [999, 699, 349])
  # T = 1024, M = 50: k = 20, so the grid starts at 999, not 1023.
  np.testing.assert_array_equal(lcm.lcm_timesteps(1024, 2), [999, 499])
  np.testing.assert_array_equal(lcm.lcm_timesteps(1000, 50), np.arange(999, 0, -20))


def test_boundary_scalings_closed_form():
  c_skip, c_out = lcm.boundary_scalings(jnp.array([0.0, 1.0, 999.0]))
  assert float(c_skip[0]) == 1.0 and float(c_out[0]) == 0.0            # f(x, 0) = x
  np.testing.assert_allclose(c_skip, [1.0, 0.25 / 100.25, 0.25 / (9990.0 ** 2 + 0.25)], rtol=1e-6)
  np.testing.assert_allclose(c_out, [0.0, 10 / math.sqrt(100.25), 9990 / math.sqrt(9990.0 ** 2
                                                                                  + 0.25)],
                             rtol=1e-6)
  np.testing.assert_allclose(c_out ** 2 + c_skip, 1.0, rtol=1e-6)      # c_out^2 + c_skip = 1
  c_skip2, _ = lcm.boundary_scalings(1.0, timestep_scaling=1.0)
  np.testing.assert_allclose(c_skip2, 0.25 / 1.25, rtol=1e-6)


@pytest.mark.parametrize("schedule", [LINEAR, SCALED], ids=["linear", "scaled_linear"])
def test_one_step_is_c_out_x0_plus_c_skip_x(schedule):
  model = exact.mixture_model_fn(MIX, schedule)
  out = samplers.get("lcm")(None, model, X_T, schedule, num_steps=1)   # deterministic, no key
  ab = float(np.asarray(schedule.alpha_bar_table)[999])
  eps = np.asarray(model(X_T, jnp.ones((32,), jnp.float32)))
  x0 = (np.asarray(X_T) - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
  c_skip, c_out = 0.25 / (9990.0 ** 2 + 0.25), 9990.0 / math.sqrt(9990.0 ** 2 + 0.25)
  # float32 x - sigma eps cancels to alpha x0 (alpha(1) = 0.0064 on the linear schedule):
  # ~1e-4 absolute is float32 accuracy there.
  np.testing.assert_allclose(np.asarray(out), c_out * x0 + c_skip * np.asarray(X_T), atol=3e-4)


def test_two_steps_by_hand():
  """x = sqrt(ab_499) d_0 + sqrt(1 - ab_499) z_0, result d_1 (no noise after the last step)."""
  model = exact.mixture_model_fn(MIX, LINEAR)
  key = jax.random.PRNGKey(3)
  out = samplers.get("lcm")(key, model, X_T, LINEAR, num_steps=2)
  ab = np.asarray(LINEAR.alpha_bar_table, np.float64)

  def denoise(x, n):
    eps = np.asarray(model(jnp.asarray(x, jnp.float32), jnp.full((32,), (n + 1) / T, jnp.float32)))
    x0 = (x - math.sqrt(1 - ab[n]) * eps) / math.sqrt(ab[n])
    s = 10.0 * n
    return s / math.sqrt(s * s + 0.25) * x0 + 0.25 / (s * s + 0.25) * x

  from research.diffusion import contract
  z = np.asarray(contract.per_example_normal(key, 0, X_T))
  x = math.sqrt(ab[499]) * denoise(np.asarray(X_T, np.float64), 999) + math.sqrt(1 - ab[499]) * z
  np.testing.assert_allclose(np.asarray(out), denoise(x, 499), atol=5e-5)


def test_nfe_contract_jit_vmap_and_batch_invariance():
  calls = []
  model = exact.mixture_model_fn(MIX, SCALED)

  def counting(x, t):
    jax.debug.callback(lambda: calls.append(1))
    np.testing.assert_equal(t.shape, x.shape[:1])
    return model(x, t)

  sampler = samplers.get("lcm")
  run = jax.jit(lambda k, x: sampler(k, counting, x, SCALED, num_steps=4))
  out = run(jax.random.PRNGKey(1), X_T)
  jax.effects_barrier()
  assert len(calls) == 4 == samplers.nfe("lcm", 4) and out.dtype == jnp.float32
  assert samplers.spec("lcm").is_stochastic() and samplers.spec("lcm").requires == \
      "consistency_distilled"
  eager = sampler(jax.random.PRNGKey(1), model, X_T, SCALED, num_steps=4)
  np.testing.assert_allclose(np.asarray(out), np.asarray(eager), atol=2e-5)
  # The first 8 examples do not depend on the batch size.
  small = sampler(jax.random.PRNGKey(1), model, X_T[:8], SCALED, num_steps=4)
  np.testing.assert_allclose(np.asarray(small), np.asarray(eager)[:8], atol=2e-5)
  keys = jax.random.split(jax.random.PRNGKey(2), 3)
  many = jax.vmap(lambda k: sampler(k, model, X_T[:4], SCALED, num_steps=3))(keys)
  assert many.shape == (3, 4, 2) and not np.allclose(many[0], many[1])


def test_explicit_timesteps_and_other_predictions():
  model = exact.mixture_model_fn(MIX, SCALED)
  key = jax.random.PRNGKey(4)
  sampler = samplers.get("lcm")
  default = np.asarray(sampler(key, model, X_T, SCALED, num_steps=4))
  times = (lcm.lcm_timesteps(T, 4) + 1.0) / T
  np.testing.assert_allclose(np.asarray(sampler(key, model, X_T, SCALED, num_steps=4,
                                                timesteps=times)), default, atol=1e-4)
  for prediction in ("x0", "v"):
    other = adapters.with_prediction(model, SCALED, "eps", prediction)
    np.testing.assert_allclose(np.asarray(sampler(key, other, X_T, SCALED, num_steps=4,
                                                  prediction=prediction)), default, atol=1e-4)
  coarse = np.asarray(sampler(key, model, X_T, SCALED, num_steps=4, original_inference_steps=8))
  assert not np.allclose(coarse, default)       # 999, 749, 499, 249


def test_refusals_name_the_argument():
  model = exact.mixture_model_fn(MIX, LINEAR)
  sampler = samplers.get("lcm")
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="num_steps must be <= original_inference_steps"):
    sampler(key, model, X_T, LINEAR, num_steps=8, original_inference_steps=4)
  with pytest.raises(ValueError, match="original_inference_steps"):
    sampler(key, model, X_T, LINEAR, num_steps=2, original_inference_steps=2000)
  with pytest.raises(ValueError, match="original_inference_steps"):
    sampler(key, model, X_T, LINEAR, num_steps=2, original_inference_steps=0)
  for bad in (0.0, -1.0):
    with pytest.raises(ValueError, match="timestep_scaling"):
      sampler(key, model, X_T, LINEAR, num_steps=2, timestep_scaling=bad)
  with pytest.raises(ValueError, match="schedule"):
    sampler(key, model, X_T, schedules.continuous_vp(), num_steps=2)
  with pytest.raises(ValueError, match="schedule"):
    sampler(key, model, X_T, schedules.ve(), num_steps=2)
  with pytest.raises(ValueError, match="key"):
    sampler(None, model, X_T, LINEAR, num_steps=2)
  with pytest.raises(ValueError, match="timesteps"):
    sampler(key, model, X_T, LINEAR, num_steps=2, timesteps=[1.0, 0.5, 0.2])
  with pytest.raises(ValueError, match="strength"):
    samplers.check_options("lcm", {"strength": 0.5})
  with pytest.raises(ValueError, match="num_steps"):
    sampler(key, model, X_T, LINEAR, num_steps=0)
  assert samplers.parse_options("lcm", "original_inference_steps=25,timestep_scaling=5") == {
      "original_inference_steps": 25, "timestep_scaling": 5.0}


# ----------------------------------------------------------------------------
# Against diffusers' LCMScheduler (optional peer).
# ----------------------------------------------------------------------------
def _lcm_pair(schedule, N, key, *, our_table, batch=64):
  diffusers = pytest.importorskip("diffusers")
  import torch
  from tests.research.diffusion import diffusers_driver
  sch = diffusers.LCMScheduler(trained_betas=diffusers_driver.betas_of(schedule))
  if our_table:
    sch.alphas_cumprod = torch.from_numpy(np.array(schedule.alpha_bar_table, np.float32))
  x_T = jax.random.normal(jax.random.PRNGKey(N), (batch, 2))
  ref, ts, nfe = diffusers_driver.run(sch, MIX, schedule, x_T, N, key=key,
                                      noise_module="diffusers.schedulers.scheduling_lcm")
  np.testing.assert_array_equal(ts, lcm.lcm_timesteps(T, N))
  assert nfe == samplers.nfe("lcm", N)
  out = samplers.get("lcm")(key, exact.mixture_model_fn(MIX, schedule), x_T, schedule,
                            num_steps=N)
  return float(np.abs(np.asarray(out) - ref).max())


@pytest.mark.parametrize("schedule", [LINEAR, SCALED], ids=["linear", "scaled_linear"])
def test_equals_diffusers_step_for_step_with_the_same_noise(schedule):
  key = jax.random.PRNGKey(9)
  for N in (1, 2, 4):
    assert _lcm_pair(schedule, N, key, our_table=True) < 2e-4
  assert _lcm_pair(schedule, 4, key, our_table=False) < 5e-4


@pytest.mark.slow
@pytest.mark.parametrize("schedule", [LINEAR, SCALED], ids=["linear", "scaled_linear"])
@pytest.mark.parametrize("N", [1, 3, 8, 16, 50])
def test_equals_diffusers_many_steps(schedule, N):
  assert _lcm_pair(schedule, N, jax.random.PRNGKey(N), our_table=True) < 2e-4


def test_equals_diffusers_in_distribution():
  """Own generators on both sides, 4000 samples, 4 steps: means, stds, mean radius agree."""
  diffusers = pytest.importorskip("diffusers")
  import torch
  from tests.research.diffusion import diffusers_driver
  n, N = 4000, 4
  sch = diffusers.LCMScheduler(trained_betas=diffusers_driver.betas_of(SCALED))
  sch.set_timesteps(N)
  gen = torch.Generator().manual_seed(0)
  x = torch.randn((n, 2), generator=gen)
  eps_fn = jax.jit(lambda x, t: exact.mixture_eps(MIX, x, SCALED.alpha(t), SCALED.sigma(t)))
  for t in sch.timesteps:
    eps = eps_fn(jnp.asarray(x.numpy()), jnp.float32((float(t) + 1) / T))
    x = sch.step(torch.from_numpy(np.asarray(eps)), t, x, generator=gen).prev_sample
  ref = x.numpy()
  x_T = jax.random.normal(jax.random.PRNGKey(1), (n, 2))
  ours = np.asarray(samplers.get("lcm")(jax.random.PRNGKey(2), exact.mixture_model_fn(MIX, SCALED),
                                        x_T, SCALED, num_steps=N))
  assert np.all(np.abs(ours.mean(0) - ref.mean(0)) < 4 * math.sqrt(2 / n) * ref.std(0))
  assert np.all(np.abs(ours.std(0) / ref.std(0) - 1) < 4 * math.sqrt(1 / n))
  radius = lambda a: np.sqrt(np.sum(a ** 2, -1))
  assert abs(radius(ours).mean() - radius(ref).mean()) < 0.05
