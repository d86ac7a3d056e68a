"""The flow family through the trainer: runlocal toy and digits runs, held-out NLL / KL,
dequantized bits/dim, samples on the data's levels, figures, config and request refusals."""

import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import flow_digits, flow_toy
from experiments import trainer
from experiments.data import make_dataset
from experiments.families.normalizing_flow import NormalizingFlow
from experiments.families.protocol import SampleRequest


def _config(module, arg):
  c = module.get_config(arg)
  c.log.progress = False
  c.train.async_checkpoint = False
  c.train.num_devices = 1
  return c


@pytest.fixture(scope="module")
def ring8_run(tmp_path_factory):
  c = _config(flow_toy, "runlocal=true,dataset=ring8,arch=spline")
  workdir = tmp_path_factory.mktemp("flow_ring8")
  return workdir, trainer.train_and_evaluate(c, str(workdir))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
  c = _config(flow_digits, "runlocal=true")
  workdir = tmp_path_factory.mktemp("flow_digits")
  return workdir, trainer.train_and_evaluate(c, str(workdir))


def test_toy_run_reports_nll_entropy_and_kl(ring8_run):
  workdir, summary = ring8_run
  assert summary["status"] == "done" and summary["step"] == 20
  for key in ("test_nll", "test_nll_stderr", "data_entropy", "kl", "kl_stderr", "w2"):
    assert np.isfinite(summary[key]), key
  # ring8: 8 well separated N(mu, 0.1^2 I): H = log 8 + log(2 pi e 0.01) = 0.3121 nats
  assert abs(summary["data_entropy"] - (math.log(8) + math.log(2 * math.pi * math.e * 0.01))) \
      < 1e-4
  # KL = E[log p - log q] on the same points = NLL - H; positive for an untrained flow
  assert abs(summary["kl"] - summary["nll_minus_entropy"]) < 1e-3
  assert summary["kl"] > 0
  names = [os.path.basename(p) for p in summary["figures"]]
  assert names == ["flow_density_0000020.png"]


def test_digits_run_reports_bits_per_dim_and_samples_on_levels(digits_run):
  workdir, summary = digits_run
  assert summary["status"] == "done"
  bits, err = summary["test_bits_per_dim"], summary["test_bits_per_dim_stderr"]
  assert np.isfinite(bits) and 0 < err < 0.5
  assert 0 < bits < 12, bits                       # a barely trained flow, still a density
  assert "dequantization" in summary["likelihood_convention"]
  assert np.isfinite(summary["fd"])
  from experiments import sampling
  run, state = sampling.load(str(workdir))
  x, stats = run.family.sample(state["ema_params"], jax.random.key(0), 8)
  assert x.shape == (8, 8, 8, 1) and stats["nfe"] == 1
  levels = np.asarray(x) * 16
  np.testing.assert_array_equal(levels, np.round(levels))
  assert levels.min() >= 0 and levels.max() <= 16


def _family(arg="runlocal=true,dataset=ring8"):
  c = _config(flow_toy, arg)
  NormalizingFlow.check_config(c)
  return NormalizingFlow(c, make_dataset(c.data))


def test_identity_at_init_gives_the_standard_normal_loss():
  family = _family("runlocal=true,dataset=moons,arch=realnvp")
  params = family.init(jax.random.key(0))
  batch = jax.random.normal(jax.random.key(1), (64, 2))
  loss, metrics = family.loss(params, batch, jax.random.key(2), 0)
  expect = -jnp.mean(jax.scipy.stats.norm.logpdf(batch).sum(-1))
  np.testing.assert_allclose(loss, expect, rtol=1e-5)
  np.testing.assert_allclose(metrics["nll"], expect, rtol=1e-5)


def test_image_loss_is_the_dequantization_bound_per_dim():
  c = _config(flow_digits, "runlocal=true")
  family = NormalizingFlow(c, make_dataset(c.data))
  params = family.init(jax.random.key(0))
  batch = make_dataset(c.data).sample(jax.random.key(1), 16)
  loss, metrics = family.loss(params, batch, jax.random.key(2), 0)
  np.testing.assert_allclose(loss * 64, metrics["nll"], rtol=1e-5)
  np.testing.assert_allclose(metrics["bits_per_dim"],
                             (metrics["nll"] + 64 * math.log(17)) / (64 * math.log(2)),
                             rtol=1e-5)


def test_requests_and_temperature():
  family = _family()
  params = family.init(jax.random.key(0))
  x, stats = family.sample(params, jax.random.key(1), 5, SampleRequest(options="temperature=0.5"))
  assert x.shape == (5, 2) and stats["nfe"] == 1
  assert family.describe(SampleRequest(options="temperature=0.5")) == "exact_T0.5"
  assert family.describe(SampleRequest()) == "exact"
  for request, field in [(SampleRequest(num_steps=4), "num_steps"),
                         (SampleRequest(labels=np.zeros(5)), "labels"),
                         (SampleRequest(guidance_scale=2.0), "guidance_scale"),
                         (SampleRequest(sampler="euler"), "sampler"),
                         (SampleRequest(options="temperature=0"), "temperature")]:
    with pytest.raises(ValueError, match=field):
      family.check_request(request)


@pytest.mark.parametrize("module,arg,override,field", [
    (flow_toy, "bins=1,arch=spline", {}, "config.flow.num_bins"),
    (flow_toy, "arch=nice", {}, "config.flow.arch"),
    (flow_toy, "", {"flow.num_layers": 0}, "config.flow.num_layers"),
    (flow_toy, "", {"data.name": "us_surnames"}, "text"),
    (flow_toy, "", {"sample.sampler": "rk4"}, "config.sample.sampler"),
    (flow_digits, "arch=maf", {}, "config.flow.arch"),
    (flow_digits, "", {"data.pixel_range": "symmetric"}, "config.data.pixel_range"),
    (flow_digits, "scales=4", {}, "config.flow.num_scales"),
    (flow_digits, "", {"flow.levels": 1}, "config.flow.levels"),
    (flow_digits, "", {"data.name": "mnist"}, "config.data.name"),
])
def test_config_errors_name_the_field(module, arg, override, field):
  c = module.get_config(",".join(filter(None, ["runlocal=true", arg])))
  with c.unlocked():
    for dotted, value in override.items():
      section, name = dotted.split(".")
      c[section][name] = value
  with pytest.raises(ValueError, match=field):
    NormalizingFlow.check_config(c)


def test_non_integer_data_cannot_be_dequantized():
  c = flow_digits.get_config("runlocal=true")
  c.data = ml_collections.ConfigDict({"name": "digits16"})   # bilinear: between the levels
  NormalizingFlow.check_config(c)
  with pytest.raises(ValueError, match="config.flow.levels=17.*not integer levels"):
    NormalizingFlow(c, make_dataset(c.data))
