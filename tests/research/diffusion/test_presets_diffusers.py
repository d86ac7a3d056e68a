"""Named presets (dpmpp_2m, dpmpp_2m_karras, euler_a), ddim / unipc with diffusers' options,
and diffusers' index grids (spacings, steps_offset), against diffusers' schedulers.

Time convention: t = 1 noise, t = 0 data; discrete index n <-> t = (n + 1)/T. The
peer (diffusers, optional) is driven by tests/research/diffusion/diffusers_driver.py
with the same exact mixture "network" of the DDPM index; deterministic outputs must
agree to float32 accuracy: max abs diff < ATOL = 2e-4 on a ring of radius ~2 (the
measured maxima are in docs/diffusers.md); stochastic ones step for step with the
same noise, and in distribution with their own generators.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.data import toy
from research.diffusion import adapters, contract, exact, grid, samplers, schedules

T = 1000
LINEAR = schedules.discrete_vp(schedules.linear_betas(T))
SCALED = schedules.discrete_vp(schedules.scaled_linear_betas(T))
MIX = toy.mixture("ring8")
ATOL = 2e-4


# ----------------------------------------------------------------------------
# Peer-free: registry entries and hand-computed index grids.
# ----------------------------------------------------------------------------
def test_presets_are_registry_entries():
  assert {"dpmpp_2m", "dpmpp_2m_karras", "euler_a", "lcm", "ddim", "unipc"} <= set(samplers.NAMES)
  assert samplers.PRESETS["dpmpp_2m"] == ("dpm_solver++", {
      "order": 2, "solver_type": "midpoint", "lower_order_final": True,
      "final_step_to_zero": True, "spacing": "linspace", "index_rule": "multistep"})
  assert samplers.PRESETS["dpmpp_2m_karras"][1]["spacing"] == "karras"
  assert samplers.PRESETS["euler_a"] == ("euler_ancestral", {
      "eta": 1.0, "s_noise": 1.0, "final_step_to_zero": True, "spacing": "linspace",
      "index_rule": "euler"})
  spec = samplers.spec
  assert spec("dpmpp_2m").default_spacing == "linspace"
  assert spec("dpmpp_2m_karras").default_spacing == "karras"
  assert not spec("dpmpp_2m").is_stochastic() and spec("euler_a").is_stochastic()
  assert not spec("euler_a").is_stochastic(eta=0.0)
  assert samplers.nfe("dpmpp_2m_karras", 12) == samplers.nfe("euler_a", 12) == 12
  assert samplers.parse_options("dpmpp_2m", "order=3,steps_offset=1,spacing=leading") == {
      "order": 3, "steps_offset": 1, "spacing": "leading"}
  # Existing defaults unchanged.
  assert spec("ddim").default_spacing == "time_uniform" and spec("unipc").options["order"].default == 3
  assert spec("ddim").options["index_rule"].default == "ddim"


def test_register_preset_refuses_unknown_or_bad_options():
  with pytest.raises(ValueError, match="bogus"):
    contract.register_preset("bad_preset_for_test", "ddim", "x", bogus=1)
  with pytest.raises(ValueError, match="eta"):
    contract.register_preset("bad_preset_for_test", "ddim", "x", eta=2.0)
  assert "bad_preset_for_test" not in samplers.NAMES


def test_preset_equals_its_base_with_the_options():
  model = exact.mixture_model_fn(MIX, LINEAR)
  x_T = jax.random.normal(jax.random.PRNGKey(0), (16, 2))
  a = samplers.get("dpmpp_2m")(None, model, x_T, LINEAR, num_steps=6)
  b = samplers.get("dpm_solver++")(None, model, x_T, LINEAR, num_steps=6, order=2,
                                   spacing="linspace", index_rule="multistep")
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  c = samplers.get("dpmpp_2m")(None, model, x_T, LINEAR, num_steps=6, order=1)   # overridable
  assert not np.array_equal(np.asarray(a), np.asarray(c))


def _index(name, N, **options):
  g = samplers.grid_for(name, LINEAR, N, **options)
  return np.round(np.asarray(g.t[:-1]) * T - 1.0, 3)


def test_index_grids_by_hand():
  """diffusers' formulas evaluated by hand (T = 1000)."""
  # DDIMScheduler: leading (arange(N) * (T // N))[::-1] + steps_offset; trailing round(T - i T/N) - 1.
  np.testing.assert_array_equal(_index("ddim", 10, spacing="leading", steps_offset=1),
                                [901, 801, 701, 601, 501, 401, 301, 201, 101, 1])
  np.testing.assert_array_equal(_index("ddim", 3, spacing="trailing"), [999, 666, 332])
  np.testing.assert_array_equal(_index("ddim", 4, spacing="linspace"), [999, 666, 333, 0])
  # DPMSolverMultistep / UniPC: the first N of the (N + 1)-point grid.
  # linspace(0, 999, 11) = 0, 99.9, ..., 499.5, ..., 999 -> round (half to even: 500).
  np.testing.assert_array_equal(_index("dpmpp_2m", 10),
                                [999, 899, 799, 699, 599, 500, 400, 300, 200, 100])
  # leading: ratio 1000 // 11 = 90, 900, 810, ..., 90 (0 dropped), + 1.
  np.testing.assert_array_equal(_index("dpmpp_2m", 10, spacing="leading", steps_offset=1),
                                [901, 811, 721, 631, 541, 451, 361, 271, 181, 91])
  # EulerAncestral: float32 linspace(0, 999, 5), not rounded.
  np.testing.assert_allclose(_index("euler_a", 5), [999.0, 749.25, 499.5, 249.75, 0.0], atol=2e-3)
  assert schedules.index_grid(T, 5, "linspace", index_rule="euler").dtype == np.float64


def test_karras_levels_and_rounded_model_indices():
  g = samplers.grid_for("dpmpp_2m_karras", LINEAR, 5)
  s = np.asarray(g.sigma / g.alpha)[:-1]
  s_max, s_min = (float(LINEAR.edm_sigma(jnp.float32(t))) for t in (1.0, 1.0 / T))
  ramp = np.linspace(0, 1, 5)
  want = (s_max ** (1 / 7) + ramp * (s_min ** (1 / 7) - s_max ** (1 / 7))) ** 7
  np.testing.assert_allclose(s, want, rtol=1e-6)
  n = np.asarray(g.t[:-1]) * T - 1.0
  np.testing.assert_allclose(n, np.round(n), atol=1e-3)             # integer model indices
  # Each index is the table index nearest (in log s) to its level.
  table = np.asarray(LINEAR.edm_sigma((jnp.arange(T) + 1.0) / T))
  for level, idx in zip(s, np.round(n).astype(int)):
    assert abs(np.interp(np.log(level), np.log(table), np.arange(T)) - idx) <= 0.5
  assert g.t[-1] == 0.0 and g.sigma[-1] == 0.0


def test_bad_grid_options_name_the_argument():
  run = lambda **o: samplers.grid_for("ddim", LINEAR, 4, **o)
  with pytest.raises(ValueError, match="steps_offset"):
    run(spacing="trailing", steps_offset=1)
  with pytest.raises(ValueError, match="steps_offset"):
    run(spacing="leading", steps_offset=-1)
  with pytest.raises(ValueError, match="steps_offset"):
    run(spacing="leading", steps_offset=300)       # 3 * 250 + 300 > T - 1
  with pytest.raises(ValueError, match="index_rule"):
    run(spacing="time_uniform", index_rule="multistep")
  with pytest.raises(ValueError, match="index_rule"):
    run(spacing="leading", index_rule="dpm")
  with pytest.raises(ValueError, match="index_rule"):
    samplers.grid_for("dpmpp_2m_karras", schedules.continuous_vp(), 4)
  with pytest.raises(ValueError, match="discrete schedule"):
    samplers.grid_for("dpmpp_2m", schedules.continuous_vp(), 4)
  with pytest.raises(ValueError, match="timesteps"):
    run(timesteps=[1.0, 0.5, 0.2, 0.1], index_rule="euler")


# ----------------------------------------------------------------------------
# Against diffusers (optional peer).
# ----------------------------------------------------------------------------
def _diffusers():
  return pytest.importorskip("diffusers")


def _driver():
  from tests.research.diffusion import diffusers_driver
  return diffusers_driver


def _betas(schedule):
  return _driver().betas_of(schedule)


def test_beta_schedules_match_diffusers_alphas_cumprod():
  diffusers = _diffusers()
  for schedule, name in ((SCALED, "scaled_linear"), (LINEAR, "linear")):
    kw = ({"beta_start": 0.00085, "beta_end": 0.012} if name == "scaled_linear"
          else {"beta_start": 1e-4, "beta_end": 0.02})     # SD's / DDPM's betas
    ref = diffusers.DDIMScheduler(beta_schedule=name, **kw).alphas_cumprod.numpy()
    ours = np.asarray(schedule.alpha_bar_table)
    np.testing.assert_allclose(ours, ref, rtol=2e-5)
  cosine = schedules.discrete_vp(schedules.cosine_betas(T))
  ref = diffusers.DDIMScheduler(beta_schedule="squaredcos_cap_v2").alphas_cumprod.numpy()
  np.testing.assert_allclose(np.asarray(cosine.alpha_bar_table), ref, rtol=1e-4)


GRID_CASES = [(T_, N, spacing, offset) for T_ in (1000, 500) for N in (1, 3, 7, 10, 50)
              for spacing, offset in (("leading", 0), ("leading", 1), ("linspace", 0),
                                      ("trailing", 0))]


def test_index_grids_equal_diffusers_timesteps():
  diffusers = _diffusers()
  classes = {"ddim": ["DDIMScheduler", "DDPMScheduler"],
             "multistep": ["DPMSolverMultistepScheduler", "UniPCMultistepScheduler"],
             "euler": ["EulerAncestralDiscreteScheduler", "EulerDiscreteScheduler"]}
  for T_, N, spacing, offset in GRID_CASES:
    schedule = schedules.discrete_vp(schedules.linear_betas(T_))
    for rule, names in classes.items():
      ours = schedules.index_grid(T_, N, spacing, steps_offset=offset, index_rule=rule)
      for cls in names:
        sch = getattr(diffusers, cls)(num_train_timesteps=T_, timestep_spacing=spacing,
                                      steps_offset=offset)
        sch.set_timesteps(N)
        ref = np.asarray(sch.timesteps, np.float64)
        np.testing.assert_allclose(ours, ref, atol=1e-3, err_msg=f"{cls} {T_} {N} {spacing}")
      g = grid.sampling_grid(schedule, N, spacing=spacing, steps_offset=offset, index_rule=rule)
      np.testing.assert_allclose(np.asarray(g.t[:-1]) * T_ - 1.0, ours, atol=2e-3)


@pytest.mark.parametrize("schedule", [LINEAR, SCALED], ids=["linear", "scaled_linear"])
def test_karras_grid_equals_diffusers(schedule):
  diffusers = _diffusers()
  for N in (3, 10, 25):
    sch = diffusers.DPMSolverMultistepScheduler(trained_betas=_betas(schedule),
                                                use_karras_sigmas=True)
    sch.set_timesteps(N)
    g = samplers.grid_for("dpmpp_2m_karras", schedule, N)
    np.testing.assert_array_equal(np.round(np.asarray(g.t[:-1]) * T - 1.0),
                                  np.asarray(sch.timesteps))
    # rtol 1e-4: diffusers' s(0) = sqrt((1 - ab_0)/ab_0) in float32 loses ~1e-4 to the
    # cancellation in 1 - ab_0 (ours: expm1 of the float64-accumulated log alpha table).
    np.testing.assert_allclose(np.asarray(g.sigma / g.alpha), sch.sigmas.numpy(), rtol=1e-4)


# name -> (diffusers class, its options, our options that equal it)
DETERMINISTIC = {
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}, {}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, {}),
    "unipc": ("UniPCMultistepScheduler", {},
              {"order": 2, "spacing": "linspace", "index_rule": "multistep",
               "corrected_final": False}),
    "ddim": ("DDIMScheduler", {"clip_sample": False, "steps_offset": 1},
             {"spacing": "leading", "steps_offset": 1}),
}


def _compare(name, schedule, N, batch=64):
  diffusers = _diffusers()
  cls, theirs, ours_opts = DETERMINISTIC[name]
  x_T = jax.random.normal(jax.random.PRNGKey(N), (batch, 2))
  sch = getattr(diffusers, cls)(trained_betas=_betas(schedule), **theirs)
  ref, _, nfe = _driver().run(sch, MIX, schedule, x_T, N)
  model = exact.mixture_model_fn(MIX, schedule)
  out = samplers.get(name)(None, model, x_T, schedule, num_steps=N, **ours_opts)
  assert nfe == samplers.nfe(name, N, **ours_opts)
  return float(np.abs(np.asarray(out) - ref).max())


@pytest.mark.parametrize("name", list(DETERMINISTIC))
@pytest.mark.parametrize("schedule", [LINEAR, SCALED], ids=["linear", "scaled_linear"])
def test_deterministic_presets_equal_diffusers(name, schedule):
  assert _compare(name, schedule, 8) < ATOL


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DETERMINISTIC))
@pytest.mark.parametrize("schedule", [LINEAR, SCALED], ids=["linear", "scaled_linear"])
@pytest.mark.parametrize("N", [1, 2, 5, 10, 20, 50])
def test_deterministic_presets_equal_diffusers_many_steps(name, schedule, N):
  assert _compare(name, schedule, N) < ATOL


def test_ddim_trailing_and_clip_sample_equal_diffusers():
  """DDIM's other options: trailing spacing; clip_sample=True = adapters.clip_x0 "static" when
  diffusers re-derives eps from the clipped x0 (step(use_clipped_model_output=True))."""
  diffusers = _diffusers()
  x_T = jax.random.normal(jax.random.PRNGKey(3), (64, 2))
  model = exact.mixture_model_fn(MIX, SCALED)
  sch = diffusers.DDIMScheduler(trained_betas=_betas(SCALED), timestep_spacing="trailing",
                                clip_sample=True)
  ref, _, _ = _driver().run(sch, MIX, SCALED, x_T, 10,
                            step_kw={"use_clipped_model_output": True})
  clipped = adapters.clip_x0(model, SCALED, "eps", "static")
  out = samplers.get("ddim")(None, clipped, x_T, SCALED, num_steps=10, spacing="trailing")
  assert np.abs(np.asarray(out) - ref).max() < ATOL


def _euler_a_pair(schedule, N, key, batch):
  """(ours, diffusers') euler_a from the same unit noise z, with our noise in diffusers."""
  diffusers = _diffusers()
  z = jax.random.normal(jax.random.PRNGKey(11), (batch, 2))
  sch = diffusers.EulerAncestralDiscreteScheduler(trained_betas=_betas(schedule))
  ref, _, _ = _driver().run(sch, MIX, schedule, z, N, key=key,
                            noise_module="diffusers.schedulers.scheduling_euler_ancestral_discrete")
  # diffusers starts at init_noise_sigma z = s_0 z (not sqrt(1 + s_0^2) z): the same start
  # in our VP scale is x_T = z s_0 / sqrt(1 + s_0^2).
  s0 = float(sch.sigmas[0])
  x_T = z * float(sch.init_noise_sigma) / math.sqrt(1.0 + s0 * s0)
  model = exact.mixture_model_fn(MIX, schedule)
  out = samplers.get("euler_a")(key, model, x_T, schedule, num_steps=N)
  return np.asarray(out), ref


@pytest.mark.parametrize("schedule", [LINEAR, SCALED], ids=["linear", "scaled_linear"])
def test_euler_a_equals_diffusers_step_for_step_with_the_same_noise(schedule):
  for N in (5, 10):        # fractional (5) and integer (10) indices
    out, ref = _euler_a_pair(schedule, N, jax.random.PRNGKey(5), 64)
    assert np.abs(out - ref).max() < ATOL


def test_euler_a_equals_diffusers_in_distribution():
  """Own generators on both sides, 4000 samples: means and stds agree (4-sigma thresholds)."""
  diffusers = _diffusers()
  import torch
  n, N = 4000, 10
  model = exact.mixture_model_fn(MIX, SCALED)
  sch = diffusers.EulerAncestralDiscreteScheduler(trained_betas=_betas(SCALED))
  sch.set_timesteps(N)
  s0 = float(sch.sigmas[0])
  gen = torch.Generator().manual_seed(0)
  z = torch.randn((n, 2), generator=gen).numpy()
  eps_fn = jax.jit(lambda x, t: exact.mixture_eps(MIX, x, SCALED.alpha(t), SCALED.sigma(t)))
  x = torch.from_numpy(z) * sch.init_noise_sigma
  for t in sch.timesteps:
    eps = eps_fn(jnp.asarray(sch.scale_model_input(x, t).numpy()), jnp.float32((float(t) + 1) / T))
    x = sch.step(torch.from_numpy(np.asarray(eps)), t, x, generator=gen).prev_sample
  ref = x.numpy()
  x_T = jax.random.normal(jax.random.PRNGKey(1), (n, 2)) * float(sch.init_noise_sigma) \
      / math.sqrt(1 + s0 * s0)
  ours = np.asarray(samplers.get("euler_a")(jax.random.PRNGKey(2), model, x_T, SCALED,
                                            num_steps=N))
  assert np.all(np.abs(ours.mean(0) - ref.mean(0)) < 4 * math.sqrt(2 / n) * ref.std(0))
  assert np.all(np.abs(ours.std(0) / ref.std(0) - 1) < 4 * math.sqrt(1 / n))
  radius = lambda a: np.sqrt(np.sum(a ** 2, -1))
  assert abs(radius(ours).mean() - radius(ref).mean()) < 0.05


def test_karras_samplers_refuse_rounded_model_indices():
  model = exact.mixture_model_fn(MIX, LINEAR)
  with pytest.raises(ValueError, match="index_rule"):
    samplers.get("euler")(None, model, jnp.zeros((2, 2)), LINEAR, num_steps=4,
                          spacing="karras", index_rule="multistep")
