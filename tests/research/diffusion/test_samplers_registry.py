"""Tests for the sampler registry of research/diffusion/samplers.py.

Every registered sampler must follow the contract
sampler(key, model_fn, x_T, schedule, *, num_steps, prediction, **options) -> x0
(time convention: t = 1 noise, t = 0 data; model_fn(x, t) with t of shape (batch,)),
and nfe(name, num_steps, **options) must equal the number of model calls.
"""
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import registry
from research.data import gmm
from research.diffusion import adapters, exact, grid, samplers, schedules

SCHEDULE = schedules.discrete_vp(schedules.linear_betas())
MIX = gmm.GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.5]], [0.4, 0.5])
CONTRACT_NAMES = ("ddpm", "ddim", "dpm_solver", "dpm_solver++", "unipc", "consistency",
                  "euler", "heun", "euler_ancestral", "langevin", "pc")
NAMES = samplers.REGISTRY.names()
GRID_NAMES = [n for n in NAMES if samplers.spec(n).grid is not None]


def test_contract_names_are_registered():
  names = samplers.NAMES
  assert isinstance(names, tuple) and names == samplers.REGISTRY.names()
  for name in CONTRACT_NAMES:
    assert name in names
  assert len(set(names)) == len(names)


@pytest.mark.parametrize("name", NAMES)
def test_spec_metadata_matches_the_function(name):
  spec = samplers.spec(name)
  assert isinstance(spec, registry.SamplerSpec) and spec.name == name and spec.kind == "sampler"
  params = inspect.signature(spec.fn).parameters
  keyword = [k for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k != "num_steps"]
  assert keyword == list(spec.option_names)
  assert all(params[k].default == o.default or (o.default is None and params[k].default is None)
             for k, o in spec.options.items())
  for shared in ("prediction", "timesteps"):
    assert shared in spec.options
  assert samplers.nfe(name, 4) == spec.count_nfe(4) >= 4
  assert spec.is_stochastic() in (True, False)
  if spec.grid is not None:
    assert spec.default_spacing == spec.grid.spacing
    assert {"spacing", "t_end", "grid"} <= set(spec.options)


def test_metadata_values():
  assert samplers.spec("consistency").prediction == "x0"
  assert all(samplers.spec(n).prediction is None for n in NAMES if n != "consistency")
  spec = samplers.spec
  assert not spec("ddim").is_stochastic() and spec("ddim").is_stochastic(eta=0.5)
  assert not spec("dpm_solver++").is_stochastic() and spec("dpm_solver++").is_stochastic(sde=True)
  assert not spec("heun").is_stochastic() and spec("heun").is_stochastic(s_churn=10.0)
  assert spec("euler_ancestral").is_stochastic() and not spec("euler_ancestral").is_stochastic(
      eta=0.0)
  assert all(spec(n).is_stochastic() for n in ("ddpm", "langevin", "pc"))
  assert not any(spec(n).is_stochastic() for n in ("euler", "unipc", "dpm_solver"))
  assert spec("ddim").default_spacing == "time_uniform"
  assert spec("dpm_solver").default_spacing == grid.DEFAULT_SPACING
  assert spec("heun").default_spacing == "karras"
  with pytest.raises(ValueError, match="needs prediction='x0'"):
    samplers.nfe("consistency", 2, prediction="eps")


def test_check_and_parse_options():
  with pytest.raises(ValueError, match=r"unknown option 'bogus' for sampler 'ddim'; valid options:"
                                       r" \['prediction', 'eta', 'spacing'"):
    samplers.check_options("ddim", {"bogus": 1})
  with pytest.raises(ValueError, match="bogus"):
    samplers.get("ddim")(None, None, jnp.zeros((2, 2)), SCHEDULE, num_steps=2, bogus=1)
  assert samplers.check_options("ddim", {"eta": 1}) == {"eta": 1.0}
  parsed = samplers.parse_options(
      "unipc", "order=2,use_corrector=false,t_end=0.01,spacing=karras,rho=5,timesteps=1;0.5;0.1")
  assert parsed == {"order": 2, "use_corrector": False, "t_end": 0.01, "spacing": "karras",
                    "rho": 5.0, "timesteps": (1.0, 0.5, 0.1)}
  assert type(parsed["order"]) is int and type(parsed["rho"]) is float
  assert samplers.parse_options("pc", {"corrector_steps": "2", "snr": 0.2}) == {
      "corrector_steps": 2, "snr": 0.2}
  with pytest.raises(ValueError, match="spacing"):
    samplers.parse_options("ddim", "spacing=cubic")
  with pytest.raises(ValueError, match="grid"):
    samplers.parse_options("ddim", "grid=abc")


def test_unknown_name_lists_the_valid_ones():
  with pytest.raises(ValueError, match="name") as info:
    samplers.get("dpm_solver_v3")
  assert "unipc" in str(info.value) and "ddim" in str(info.value)
  with pytest.raises(ValueError, match="name"):
    samplers.nfe("nope", 10)


def test_nfe_refuses_unknown_options_and_bad_num_steps():
  with pytest.raises(ValueError, match="option"):
    samplers.nfe("ddim", 10, etaa=0.5)
  with pytest.raises(ValueError, match="num_steps"):
    samplers.nfe("unipc", 0)
  with pytest.raises(ValueError, match="prediction"):
    samplers.nfe("unipc", 5, prediction="noise")


def test_nfe_values():
  assert samplers.nfe("ddpm", 1000) == 1000
  assert samplers.nfe("ddim", 50, eta=1.0) == 50
  assert samplers.nfe("dpm_solver", 10) == 10
  assert samplers.nfe("dpm_solver", 10, method="singlestep", order=3) == 28
  assert samplers.nfe("dpm_solver", 10, method="singlestep", order=3,
                      final_step_to_zero=False) == 30
  assert samplers.nfe("dpm_solver++", 7, order=3, sde=True) == 7
  assert samplers.nfe("unipc", 5, order=3) == 5


def test_register_adds_a_sampler():
  def identity_sampler(key, model_fn, x_T, schedule, *, num_steps, prediction="eps", scale=1.0):
    del key, model_fn, schedule, num_steps, prediction
    return x_T * scale

  samplers.register("identity_for_test", identity_sampler, lambda n: 0)
  try:
    assert "identity_for_test" in samplers.NAMES
    assert samplers.get("identity_for_test") is identity_sampler
    assert samplers.nfe("identity_for_test", 4, prediction="x0") == 0
    assert samplers.parse_options("identity_for_test", "scale=2") == {"scale": 2.0}
    with pytest.raises(ValueError, match="scal"):
      samplers.check_options("identity_for_test", {"scal": 2.0})
    with pytest.raises(ValueError, match="prediction"):
      samplers.nfe("identity_for_test", 4, prediction="noise")
  finally:
    samplers.REGISTRY.remove("identity_for_test")
  assert "identity_for_test" not in samplers.NAMES
  with pytest.raises(ValueError, match="name"):
    samplers.register("", identity_sampler, lambda n: 0)
  with pytest.raises(ValueError, match="callable"):
    samplers.register("x", identity_sampler, None)


def test_decorator_registers_a_toy_sampler_in_one_place():
  """A new sampler: one function, one registration; get/nfe/spec/check/parse all see it."""
  shrink = registry.real("shrink", 0.5, low=0.0, high=1.0, doc="factor per step")

  @samplers.register("toy_for_test", nfe=lambda num_steps, **_: 2 * num_steps,
                     options=(adapters.PREDICTION, shrink) + grid.GRID_OPTIONS,
                     stochastic=lambda shrink, **_: shrink > 0.9,
                     grid=grid.GridRule("time_uniform", t_end="t_min"))
  def toy(key, model_fn, x_T, schedule, *, num_steps, grid, prediction, shrink):
    del key, model_fn, schedule, prediction
    return x_T * shrink ** num_steps + 0.0 * float(grid.t[1])

  try:
    assert samplers.NAMES[-1] == "toy_for_test" and samplers.get("toy_for_test") is toy
    spec = samplers.spec("toy_for_test")
    assert spec.default_spacing == "time_uniform" and spec.option_names[:2] == ("prediction",
                                                                                "shrink")
    assert samplers.nfe("toy_for_test", 3) == 6
    assert not spec.is_stochastic() and spec.is_stochastic(shrink=0.95)
    assert samplers.parse_options("toy_for_test", "shrink=0.25,final_step_to_zero=0") == {
        "shrink": 0.25, "final_step_to_zero": False}
    with pytest.raises(ValueError, match="shrink"):
      samplers.check_options("toy_for_test", {"shrink": 2.0})
    x = toy(None, None, jnp.ones((2, 2)), SCHEDULE, num_steps=2, shrink=0.5)
    np.testing.assert_array_equal(np.asarray(x), 0.25)
    assert list(inspect.signature(toy).parameters)[:6] == ["key", "model_fn", "x_T", "schedule",
                                                          "num_steps", "prediction"]
    with pytest.raises(ValueError, match="shrink"):
      toy(None, None, jnp.ones((2, 2)), SCHEDULE, num_steps=2, shrink=-1.0)
  finally:
    samplers.REGISTRY.remove("toy_for_test")
  with pytest.raises(ValueError, match="keyword-only"):
    samplers.register("bad_for_test", nfe=lambda n, **_: n, options=(shrink,))(
        lambda key, model_fn, x_T, schedule, *, num_steps: x_T)
  assert "bad_for_test" not in samplers.NAMES


@pytest.mark.parametrize("name", NAMES)
def test_signature_follows_the_contract(name):
  params = inspect.signature(samplers.get(name)).parameters
  positional = [p.name for p in params.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
  assert positional == ["key", "model_fn", "x_T", "schedule"]
  for keyword in ("num_steps", "prediction"):
    assert params[keyword].kind is inspect.Parameter.KEYWORD_ONLY
  assert params["num_steps"].default is inspect.Parameter.empty


@pytest.mark.parametrize("name", NAMES)
def test_every_sampler_runs_and_counts_its_evaluations(name):
  calls = []
  sampler = samplers.get(name)
  prediction = inspect.signature(sampler).parameters["prediction"].default
  model = exact.mixture_model_fn(MIX, SCHEDULE, prediction)

  def counting_model(x, t):
    assert t.shape == x.shape[:1]        # one time per example
    jax.debug.callback(lambda: calls.append(1))
    return model(x, t)

  x_T = jax.random.normal(jax.random.PRNGKey(0), (4, 2))
  out = jax.jit(lambda k, x: sampler(k, counting_model, x, SCHEDULE, num_steps=3))(
      jax.random.PRNGKey(1), x_T)
  jax.effects_barrier()
  assert out.shape == x_T.shape and out.dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(out)))
  assert len(calls) == samplers.nfe(name, 3)


def _run(name, num_steps=4, **options):
  prediction = samplers.spec(name).options["prediction"].default
  model = exact.mixture_model_fn(MIX, SCHEDULE, prediction)
  x_T = jax.random.normal(jax.random.PRNGKey(0), (8, 2))
  return np.asarray(samplers.get(name)(jax.random.PRNGKey(1), model, x_T, SCHEDULE,
                                       num_steps=num_steps, **options))


@pytest.mark.parametrize("name", GRID_NAMES)
def test_explicit_grid_equals_the_default_grid_bitwise(name):
  """grid= (the sampler's own default grid) and timesteps= (its times) change nothing."""
  default = _run(name)
  g = samplers.grid_for(name, SCHEDULE, 4)
  assert g.t.shape == (5,) and g.t[0] == 1.0 and np.all(np.diff(g.t) < 0)
  np.testing.assert_array_equal(_run(name, grid=g), default)
  n_times = 4 if g.final_step_to_zero else 5
  if np.allclose(SCHEDULE.alpha(jnp.asarray(g.t[:n_times], jnp.float32)), g.alpha[:n_times]):
    # (not dpmpp_2m_karras: its grid.t are the rounded model indices of its Karras levels)
    np.testing.assert_array_equal(_run(name, timesteps=np.asarray(g.t[:n_times])), default)
  with pytest.raises(ValueError, match="grid"):
    _run(name, grid=g, spacing="time_uniform")
  with pytest.raises(ValueError, match="points"):
    _run(name, num_steps=3, grid=g)


@pytest.mark.parametrize("name", ["pc", "langevin", "consistency"])
def test_pc_langevin_and_consistency_accept_timesteps(name):
  n_times = 4 if name != "pc" else 5
  times = np.linspace(1.0, 0.05, n_times)
  out = _run(name, timesteps=times)
  assert out.shape == (8, 2) and np.all(np.isfinite(out))
  assert not np.array_equal(out, _run(name))
  with pytest.raises(ValueError, match="timesteps"):
    _run(name, timesteps=times[:-1])


def test_grid_rules():
  ddim = samplers.grid_for("ddim", SCHEDULE, 10)
  assert ddim.final_step_to_zero and ddim.t[-1] == 0.0
  assert np.isclose(ddim.t[-2], grid.default_t_end(SCHEDULE, 10, True, "time_uniform"), atol=1e-7)
  ddpm = samplers.grid_for("ddpm", SCHEDULE, 1000)
  assert np.allclose(ddpm.t[:-1] * 1000 - 1, np.arange(999, -1, -1), atol=1e-3)
  ddpm_vp = samplers.grid_for("ddpm", schedules.continuous_vp(), 5)   # linspace -> time_uniform
  assert np.allclose(np.diff(ddpm_vp.t[:-1]), np.diff(ddpm_vp.t[:-1])[0])
  pc = samplers.grid_for("pc", SCHEDULE, 5, final_step_to_zero=True)
  assert not pc.final_step_to_zero and np.isclose(pc.t[-1], SCHEDULE.t_min)
  with pytest.raises(ValueError, match="does not take"):
    samplers.grid_for("consistency", SCHEDULE, 3)
  with pytest.raises(ValueError, match="final_step_to_zero"):
    _run("pc", grid=samplers.grid_for("ddim", SCHEDULE, 4))
  with pytest.raises(ValueError, match="StepGrid"):
    _run("ddim", grid=(1, 2))
  with pytest.raises(ValueError, match="spacing"):
    grid.GridRule("cubic")
  with pytest.raises(ValueError, match="t_end"):
    grid.GridRule("karras", t_end="late")
  assert [o.name for o in grid.grid_options(exclude=("rho", "grid"))] == [
      "spacing", "t_end", "timesteps", "final_step_to_zero", "steps_offset", "index_rule"]


def test_steps_for_nfe_is_the_largest_count_within_the_budget():
  for name in ("dpm_solver++", "heun", "unipc"):
    for budget in (1, 5, 10, 20):
      n = samplers.steps_for_nfe(name, budget)
      if n is None:
        assert samplers.nfe(name, 1) > budget
        continue
      assert samplers.nfe(name, n) <= budget < samplers.nfe(name, n + 1), (name, budget, n)
  assert samplers.steps_for_nfe("heun", 5) == 3            # Heun: 2N - 1 evaluations
  assert samplers.steps_for_nfe("dpm_solver", 9, order=3, method="singlestep") == 3  # 3 (N - 1) + 1
