"""Dequantized training data (config.data.dequantize) and the held-out PF-ODE bits/dim of the
flow_matching and diffusion families (experiments/likelihood.py, docs/likelihood.md)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cfm_digits, ddpm_digits, vae_digits
from experiments import likelihood as heldout
from experiments import trainer
from experiments.data import make_dataset
from experiments.families.diffusion import Diffusion
from experiments.families.flow_matching import FlowMatching


def _config(module, arg=""):
  c = module.get_config(",".join(filter(None, ["runlocal=true", arg])))
  c.train.num_devices = 1
  return c


def test_dequantized_draws_spread_each_level_over_its_bin():
  c = _config(cfm_digits, "dequantize=17")
  deq, plain = make_dataset(c.data), make_dataset(_config(cfm_digits).data)
  assert deq.dequantize == 17 and plain.dequantize == 0
  key = jax.random.key(3)
  y = np.asarray(jax.jit(deq.sample, static_argnums=1)(key, 256))
  x = np.asarray(plain.sample(key, 256))                     # the same indices, not dequantized
  levels = np.round((x + 1) / 2 * 16)
  u = (y + 1) / 2 * 17 - levels                              # y = 2 (k + u) / 17 - 1
  assert np.all((u >= -1e-5) & (u < 1 + 1e-5))
  assert abs(u.mean() - 0.5) < 0.02 and abs(u.var() - 1 / 12) < 0.01
  x_lab, labels = deq.sample_labeled(key, 256)
  np.testing.assert_allclose(np.asarray(x_lab), y, atol=1e-6)   # eager vs jitted: an ulp
  np.testing.assert_array_equal(np.asarray(labels), np.asarray(plain.sample_labeled(key, 256)[1]))
  np.testing.assert_array_equal(deq.test, plain.test)       # held-out images stay on the grid


@pytest.mark.parametrize("module, arg, field, value, match", [
    (cfm_digits, "", "data.dequantize", 1, "config.data.dequantize must be 0"),
    (cfm_digits, "", "data.dequantize", -3, "config.data.dequantize"),
    (cfm_digits, "", "data.name", "digits16",
     r"config.data.dequantize=17: the pixels of 'digits16'"),
    (cfm_digits, "", "data.dequantize", 5, r"config.data.dequantize=5: the pixels of 'digits'"),
    (vae_digits, "", "data.dequantize", 17, "the vae family does not train on dequantized data"),
])
def test_bad_dequantize_configs_are_refused(module, arg, field, value, match):
  c = _config(module, arg)
  if module is cfm_digits:
    c.data.dequantize = 17
  section, name = field.split(".")
  c[section][name] = value
  with pytest.raises(ValueError, match=match):
    trainer.build(c)


def test_dequantize_needs_in_memory_digits():
  from configs import cfm_toy
  c = cfm_toy.get_config("runlocal=true")
  c.data.dequantize = 17
  with pytest.raises(ValueError, match="config.data.dequantize=17 needs an in-memory digits set"):
    trainer.build(c)


def _standard_normal_bits(dataset, key, n):
  """Bits/dim of N(0, I) in [-1, 1] model space on the held-out images dequantized as the
  families do (fold_in(key, 0)): (-log N(y') - D log 2 + D log 17) / (D ln 2)."""
  y = np.asarray(heldout.dequantized_heldout(jax.random.fold_in(key, 0), dataset, 17, n),
                 np.float64).reshape(n, -1)
  nll = 0.5 * np.sum(y ** 2, 1) + 0.5 * y.shape[1] * math.log(2 * math.pi)
  d = y.shape[1]
  return (nll - d * math.log(2) + d * math.log(17)) / (d * math.log(2))


def test_flow_matching_bits_per_dim_convention_on_a_known_density():
  """v = 0: the flow is the identity, p = N(0, I) in model space, the divergence is 0."""
  c = _config(cfm_digits, "dequantize=17")
  dataset = make_dataset(c.data)
  family = FlowMatching(c, dataset)
  family.velocity_fn = lambda params: (lambda x, t: jnp.zeros_like(x))
  key = jax.random.key(0)
  expected = _standard_normal_bits(dataset, key, 6)
  for exact in (True, False):
    out = family.heldout_bits_per_dim({}, key, dataset, num_images=6, exact=exact, batch_size=4)
    np.testing.assert_allclose(out["per_image_bits"], expected, rtol=1e-5)
    assert out["bits_per_dim"] == pytest.approx(expected.mean(), rel=1e-5)
    assert out["bits_per_dim_stderr"] == pytest.approx(
        expected.std(ddof=1) / math.sqrt(6), rel=1e-4)
    assert out["num_images"] == 6 and out["nfe_mean"] >= 7 and out["seconds"] >= 0


def test_diffusion_bits_per_dim_convention_on_a_known_density():
  """eps_hat = sigma(t) x is the exact model of N(0, I) data under a VP schedule: the PF-ODE
  keeps N(0, I), so log p_{t_min}(y') = log N(y'; 0, I) (up to the solver's tolerance)."""
  c = _config(ddpm_digits, "dequantize=17,schedule=cosine_vp")
  dataset = make_dataset(c.data)
  family = Diffusion(c, dataset)
  sigma = family.schedule.sigma
  family.model_fn = lambda params: (lambda x, t: sigma(t).reshape(-1, 1, 1, 1) * x)
  key = jax.random.key(1)
  expected = _standard_normal_bits(dataset, key, 4)
  out = family.heldout_bits_per_dim({}, key, dataset, num_images=4, exact=True)
  np.testing.assert_allclose(out["per_image_bits"], expected, atol=1e-4)


def test_a_trained_family_reports_finite_bits_and_refuses_what_it_cannot_score():
  c = _config(cfm_digits, "dequantize=17")
  dataset = make_dataset(c.data)
  family = FlowMatching(c, dataset)
  params = family.init(jax.random.key(0))
  exact = family.heldout_bits_per_dim(params, jax.random.key(2), dataset, num_images=3,
                                      exact=True, rtol=1e-3, atol=1e-3)
  hutch = family.heldout_bits_per_dim(params, jax.random.key(2), dataset, num_images=3,
                                      rtol=1e-3, atol=1e-3)
  for out in (exact, hutch):
    assert np.all(np.isfinite(out["per_image_bits"])) and out["num_images"] == 3
  # the same images and dequantization noise: the two traces differ by Hutchinson's noise only
  assert abs(exact["bits_per_dim"] - hutch["bits_per_dim"]) < 0.5
  plain = _config(cfm_digits)
  with pytest.raises(ValueError, match="config.data.dequantize=0"):
    FlowMatching(plain, make_dataset(plain.data)).heldout_bits_per_dim(params, jax.random.key(0),
                                                                        dataset, num_images=2)
  cond = _config(cfm_digits, "dequantize=17,cond=true")
  with pytest.raises(ValueError, match="config.model.num_classes=10"):
    FlowMatching(cond, dataset).heldout_bits_per_dim(params, jax.random.key(0), dataset,
                                                     num_images=2)
  with pytest.raises(ValueError, match="num_images"):
    family.heldout_bits_per_dim(params, jax.random.key(0), dataset, num_images=298)
