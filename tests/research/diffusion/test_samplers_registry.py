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

from research.data import gmm
from research.diffusion import exact, samplers, schedules

SCHEDULE = schedules.discrete_vp(schedules.linear_betas())
MIX = gmm.GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.5]], [0.4, 0.5])
CONTRACT_NAMES = ("ddpm", "ddim", "dpm_solver", "dpm_solver++", "unipc",
                  "euler", "heun", "euler_ancestral", "langevin", "pc")


def test_contract_names_are_registered():
  names = samplers.NAMES
  assert isinstance(names, tuple)
  for name in CONTRACT_NAMES:
    assert name in names
  assert len(set(names)) == len(names)


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
  def identity_sampler(key, model_fn, x_T, schedule, *, num_steps, prediction="eps"):
    del key, model_fn, schedule, num_steps, prediction
    return x_T

  samplers.register("identity_for_test", identity_sampler, lambda n, **kw: 0)
  try:
    assert "identity_for_test" in samplers.NAMES
    assert samplers.get("identity_for_test") is identity_sampler
    assert samplers.nfe("identity_for_test", 4) == 0
  finally:
    samplers._REGISTRY.pop("identity_for_test")
  assert "identity_for_test" not in samplers.NAMES
  with pytest.raises(ValueError, match="name"):
    samplers.register("", identity_sampler, lambda n: 0)


@pytest.mark.parametrize("name", samplers.NAMES)
def test_signature_follows_the_contract(name):
  params = inspect.signature(samplers.get(name)).parameters
  positional = [p.name for p in params.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
  assert positional == ["key", "model_fn", "x_T", "schedule"]
  for keyword in ("num_steps", "prediction"):
    assert params[keyword].kind is inspect.Parameter.KEYWORD_ONLY
  assert params["num_steps"].default is inspect.Parameter.empty


@pytest.mark.parametrize("name", samplers.NAMES)
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
