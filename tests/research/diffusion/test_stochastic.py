"""Tests for research/diffusion/stochastic.py: annealed Langevin and predictor-corrector.

Model: the exact eps of an 8-mode 2-D Gaussian ring under the discrete linear
VP schedule. Quality is the exact W2 of 500 samples to 500 data points against
the noise floor W2 of two independent data draws (a looser factor than for the
ancestral sampler: Langevin-type samplers carry a step-size bias).
"""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.data import gmm as G
from research.diffusion import exact
from research.diffusion import samplers
from research.diffusion import schedules as S
from research.diffusion import stochastic
from research.metrics.distances import wasserstein2

MIX = G.ring(8, 1.5, 0.2)
SCHED = S.discrete_vp(S.linear_betas(1000))
MODELS = {p: exact.mixture_model_fn(MIX, SCHED, p) for p in ("eps", "score")}
N_POINTS = 500


@functools.partial(jax.jit, static_argnames=("name", "num_steps", "options", "prediction"))
def _sample(key, x_T, *, name, num_steps, options=(), prediction="eps"):
  return samplers.get(name)(key, MODELS[prediction], x_T, SCHED, num_steps=num_steps,
                            prediction=prediction, **dict(options))


def _x_T(n, seed=0):
  return jax.random.normal(jax.random.key(seed), (n, 2))


@functools.lru_cache(maxsize=None)
def _data_and_floor():
  data = G.sample(jax.random.key(11), MIX, N_POINTS)
  floor = float(wasserstein2(G.sample(jax.random.key(12), MIX, N_POINTS), data))
  return data, floor


@pytest.mark.parametrize("name,num_steps,options", [
    ("langevin", 10, ()),                                     # 100 Langevin steps + denoise
    ("pc", 100, ()),                                          # reverse diffusion + 1 corrector
    ("pc", 100, (("predictor", "euler_maruyama"),)),
])
def test_reaches_the_data_distribution(name, num_steps, options):
  data, floor = _data_and_floor()
  out = _sample(jax.random.key(3), _x_T(N_POINTS), name=name, num_steps=num_steps,
                options=options)
  w2 = float(wasserstein2(out, data))
  # Measured W2 / floor: langevin 1.0, pc 0.9, pc (Euler-Maruyama) 1.0.
  assert w2 < 2.0 * floor, (w2, floor)


PC_EXAMPLE = (("snr_norm", "example"),)


@pytest.mark.parametrize("name,options", [("langevin", ()), ("pc", PC_EXAMPLE)])
def test_noise_does_not_depend_on_batch_size(name, options):
  x_T = _x_T(8)
  full = _sample(jax.random.key(5), x_T, name=name, num_steps=10, options=options)
  part = _sample(jax.random.key(5), x_T[:3], name=name, num_steps=10, options=options)
  np.testing.assert_allclose(full[:3], part, atol=1e-5)
  other = _sample(jax.random.key(6), x_T, name=name, num_steps=10, options=options)
  assert float(jnp.max(jnp.abs(full - other))) > 1e-2


def test_score_prediction_gives_the_same_samples():
  x_T = _x_T(8)
  ref = _sample(jax.random.key(5), x_T, name="pc", num_steps=10, options=PC_EXAMPLE)
  out = _sample(jax.random.key(5), x_T, name="pc", num_steps=10, options=PC_EXAMPLE,
                prediction="score")
  np.testing.assert_allclose(out, ref, atol=1e-3)


# ---------------------------------------------------------------------------
# NFE, tracing and compilation.


@pytest.mark.parametrize("name,options", [
    ("langevin", {"n_inner": 2}), ("langevin", {"n_inner": 2, "final_step_to_zero": False}),
    ("pc", {"corrector_steps": 2}), ("pc", {"corrector_steps": 0, "final_step_to_zero": False})])
def test_nfe_is_exact_and_compiles_once(name, options):
  count = [0]

  def model(x, t):
    jax.debug.callback(lambda _: count.__setitem__(0, count[0] + 1), t[0])
    return MODELS["eps"](x, t)

  chex.clear_trace_counter()   # the counter is keyed by source location (parametrized test)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(key, x_T):
    return samplers.get(name)(key, model, x_T, SCHED, num_steps=3, **options)

  out = run(jax.random.key(0), _x_T(2, seed=0))
  run(jax.random.key(1), _x_T(2, seed=1))
  jax.block_until_ready(out)
  jax.effects_barrier()
  expected = samplers.nfe(name, 3, **options)
  assert count[0] == 2 * expected
  final = int(options.get("final_step_to_zero", True))
  if name == "langevin":
    assert expected == 3 * options["n_inner"] + final
  else:
    assert expected == 3 * (1 + options["corrector_steps"]) + final
  assert np.all(np.isfinite(np.asarray(out)))


@pytest.mark.parametrize("name,options,traces", [
    ("langevin", {}, 2), ("pc", {"corrector_steps": 3}, 3)])
def test_model_is_traced_a_fixed_number_of_times(name, options, traces):
  def count(num_steps):
    calls = []

    def model(x, t):
      calls.append(1)
      return MODELS["eps"](x, t)

    jax.make_jaxpr(lambda k, x: samplers.get(name)(k, model, x, SCHED, num_steps=num_steps,
                                                   **options))(jax.random.key(0), _x_T(4))
    return len(calls)

  # langevin: loop body + final denoise; pc: corrector scan + predictor + denoise.
  assert count(4) == count(300) == traces


# ---------------------------------------------------------------------------
# SDE coefficients and validation.


def test_sde_coefficients_match_the_vp_and_ve_sdes():
  t = jnp.linspace(0.05, 1.0, 8)
  f, g2 = jax.jit(stochastic.sde_coefficients)(S.continuous_vp(), t)
  beta = 0.1 + (20.0 - 0.1) * t                              # beta(t) of the VP-SDE
  np.testing.assert_allclose(f, -0.5 * beta, rtol=1e-4)
  np.testing.assert_allclose(g2, beta, rtol=1e-3)
  ve = S.ve()
  f, g2 = jax.jit(stochastic.sde_coefficients)(ve, t)
  np.testing.assert_allclose(f, 0.0, atol=1e-6)
  # d sigma^2/dt = 2 sigma^2 log(sigma_max / sigma_min)
  np.testing.assert_allclose(g2, 2 * ve.sigma(t) ** 2 * np.log(80.0 / 0.002), rtol=1e-4)


def test_invalid_arguments_are_refused():
  key, model, x_T = jax.random.key(0), MODELS["eps"], _x_T(4)
  with pytest.raises(ValueError, match="n_inner"):
    stochastic.langevin(key, model, x_T, SCHED, num_steps=3, n_inner=0)
  with pytest.raises(ValueError, match="step_lr"):
    stochastic.langevin(key, model, x_T, SCHED, num_steps=3, step_lr=-1.0)
  with pytest.raises(ValueError, match="predictor"):
    stochastic.pc(key, model, x_T, SCHED, num_steps=3, predictor="ancestral")
  with pytest.raises(ValueError, match="corrector_steps"):
    stochastic.pc(key, model, x_T, SCHED, num_steps=3, corrector_steps=-1)
  with pytest.raises(ValueError, match="snr_norm"):
    stochastic.pc(key, model, x_T, SCHED, num_steps=3, snr_norm="global")
  with pytest.raises(ValueError, match="snr"):
    stochastic.pc(key, model, x_T, SCHED, num_steps=3, snr=-0.1)
  with pytest.raises(ValueError, match="num_steps"):
    stochastic.pc(key, model, x_T, SCHED, num_steps=0)
  with pytest.raises(ValueError, match="key"):
    stochastic.langevin(None, model, x_T, SCHED, num_steps=3)
  with pytest.raises(ValueError, match="n_inner"):
    samplers.nfe("langevin", 3, n_inner=0)
