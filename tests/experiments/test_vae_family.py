"""The VAE family through the trainer: a runlocal digits run, held-out metrics, figures, configs."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import vae_digits, vae_toy
from experiments import logs, sampling, trainer
from experiments.data import make_dataset
from experiments.families.protocol import SampleRequest
from experiments.families.vae import VAE


def _digits_config(arg="runlocal=true"):
  c = vae_digits.get_config(arg)
  c.log.progress = False
  c.train.async_checkpoint = False
  c.train.num_devices = 1  # the trainer's sharding has its own tests; one device compiles faster
  return c


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
  # capacity on (C_max = 1 nat over 10 steps) so the step passed to the loss is exercised
  c = _digits_config("runlocal=true,capacity=1.0,capacity_steps=10,gamma=10.0")
  workdir = tmp_path_factory.mktemp("vae")
  return workdir, trainer.train_and_evaluate(c, str(workdir))


def test_runlocal_digits_run_reports_finite_heldout_metrics_and_figures(digits_run):
  workdir, summary = digits_run
  assert summary["status"] == "done" and summary["step"] == 20
  keys = ["test_neg_elbo", "test_iwae_nll_1", "test_iwae_nll_5", "test_iwae_nll_50",
          "test_iwae_nll_200", "bernoulli_baseline_nll", "test_recon", "test_kl"]
  for k in keys:
    assert np.isfinite(summary[k]), k
  assert summary["num_test"] == 297
  # binarized digits: the independent-pixel baseline is about 24.6 nats per image
  assert 20 < summary["bernoulli_baseline_nll"] < 30
  # E[L_1] <= E[L_5] <= E[L_50]: the NLL estimates do not increase with k
  nll = [summary[f"test_iwae_nll_{k}"] for k in (1, 5, 50, 200)]
  assert all(a >= b - 0.05 for a, b in zip(nll, nll[1:])), nll
  names = sorted(os.path.basename(p) for p in summary["figures"])
  assert names == ["latent_grid_0000020.png", "latent_scatter_0000020.png",
                   "vae_samples_0000020.png"]
  assert all(os.path.getsize(p) > 1000 for p in summary["figures"])


def test_capacity_ramp_reads_the_train_step(digits_run):
  workdir, _ = digits_run
  rows = [r for r in logs.read_metrics(workdir) if "loss" in r]
  # logged values are window means: C(s) = s / 10 for s in 0..4, 5..9, then 1
  np.testing.assert_allclose([r["capacity"] for r in rows], [0.2, 0.7, 1.0, 1.0], rtol=1e-5)
  assert {"elbo", "recon", "kl"} <= set(rows[0])
  run, state = sampling.load(str(workdir))
  assert set(state["params"]) == {"model"}                      # no step counter in params
  x, stats = run.family.sample(state["ema_params"], jax.random.key(0), 6,
                               SampleRequest(sampler="sample"))
  assert x.shape == (6, 8, 8, 1) and set(np.unique(x)) <= {0.0, 1.0} and stats == {}
  with pytest.raises(ValueError, match=r"the vae family cannot honour SampleRequest.num_steps=3"):
    run.family.sample(state["ema_params"], jax.random.key(0), 6, SampleRequest(num_steps=3))


def test_capacity_comes_from_the_step_argument():
  c = _digits_config("runlocal=true,capacity=1.0,capacity_steps=10,gamma=10.0")
  family = VAE(c, make_dataset(c.data))
  params = family.init(jax.random.key(0))
  batch = family.dataset.sample(jax.random.key(1), 8)
  loss_fn = jax.jit(family.loss)
  for step, capacity in ((0, 0.0), (4, 0.4), (10, 1.0), (50, 1.0)):
    _, metrics = loss_fn(params, batch, jax.random.key(2), jnp.int32(step))
    np.testing.assert_allclose(metrics["capacity"], capacity, rtol=1e-6)
  assert not hasattr(family, "after_step")


@pytest.mark.parametrize("request_, match", [
    (SampleRequest(sampler="ddim"), r"SampleRequest.sampler='ddim' \(its samplers are"),
    (SampleRequest(num_steps=10), r"SampleRequest.num_steps=10 \(it samples in one decoder pass"),
    (SampleRequest(options={"eta": 0.5}), r"SampleRequest.options=\{'eta': 0.5\}"),
    (SampleRequest(labels=np.zeros(4, np.int32)), "SampleRequest.labels"),
    (SampleRequest(guidance_scale=2.0), "SampleRequest.guidance_scale=2.0"),
    (SampleRequest(clip_x0="static"), "SampleRequest.clip_x0='static'"),
])
def test_requests_the_vae_cannot_honour_are_refused(request_, match):
  c = vae_toy.get_config("runlocal=true")
  family = VAE(c, make_dataset(c.data))
  with pytest.raises(ValueError, match="the vae family cannot honour " + match):
    family.check_request(request_)
  with pytest.raises(ValueError, match="the vae family cannot honour " + match):
    family.sample(family.init(jax.random.key(0)), jax.random.key(1), 4, request_)
  family.check_request(SampleRequest(sampler="sample"))   # what it can honour passes


def test_toy_family_loss_sample_and_evaluate_without_the_trainer():
  c = vae_toy.get_config("runlocal=true,k=4")
  c.vae.eval_k = (1, 5)
  c.vae.nll_k, c.vae.nll_chunk, c.vae.eval_num = 64, 32, 64
  family = VAE(c, make_dataset(c.data))
  params = jax.jit(family.init)(jax.random.key(0))
  assert set(params) == {"model"} and "log_var" in params["model"]["decoder"]
  batch = jax.jit(family.dataset.sample, static_argnums=1)(jax.random.key(1), 32)
  loss, metrics = jax.jit(family.loss)(params, batch, jax.random.key(2), jnp.int32(0))
  assert np.isfinite(loss) and np.isclose(loss, -metrics["iwae_4"])
  x, _ = family.sample(params, jax.random.key(3), 10)
  assert x.shape == (10, 2)
  out = family.evaluate(params, jax.random.key(4), family.dataset)
  assert {"test_neg_elbo", "test_iwae_nll_1", "test_iwae_nll_5", "test_iwae_nll_64",
          "gaussian_baseline_nll"} <= set(out)
  assert all(np.isfinite(v) for v in out.values())


@pytest.mark.parametrize("field, value, match", [
    ("vae.likelihood", "poisson", "config.vae.likelihood"),
    ("vae.beta", -1.0, "config.vae.beta"),
    ("vae.iwae_k", 0, "config.vae.iwae_k"),
    ("vae.kl", "sampled", "config.vae.kl"),
    ("vae.latent_dim", 0, "config.vae.latent_dim"),
    ("vae.capacity_steps", 0, "config.vae.capacity_steps"),
    ("sample.sampler", "rk4", "config.sample.sampler"),
    ("vae.network", "transformer", "config.vae.network"),
    ("data.pixel_range", "symmetric", "config.data.pixel_range"),   # Bernoulli needs [0, 1]
])
def test_bad_configs_are_refused_before_compiling(field, value, match):
  c = _digits_config()
  section, name = field.split(".")
  c[section][name] = value
  with pytest.raises(ValueError, match=match):
    trainer.build(c)


def test_config_combinations_that_make_no_sense_are_refused():
  c = _digits_config("runlocal=true,k=5,beta=4.0")
  with pytest.raises(ValueError, match="iwae_k"):
    trainer.build(c)
  toy = vae_toy.get_config("runlocal=true")
  toy.vae.likelihood = "bernoulli"
  with pytest.raises(ValueError, match="bernoulli"):
    trainer.build(toy)


def test_categorical_decoder_trains_a_runlocal_run_and_reports_bits_per_dim(tmp_path):
  c = _digits_config("runlocal=true,likelihood=categorical")
  assert c.data.name == "digits" and c.vae.levels == 17
  c.vae.eval_k, c.vae.nll_k, c.vae.nll_chunk = (1, 5), 50, 50
  summary = trainer.train_and_evaluate(c, str(tmp_path))
  assert summary["status"] == "done" and summary["step"] == c.train.num_steps
  for k in ("test_bits_per_dim", "test_bits_per_dim_stderr", "test_iwae_nll_50",
            "categorical_baseline_nll", "categorical_baseline_bits_per_dim"):
    assert np.isfinite(summary[k]), k
  assert summary["test_bits_per_dim"] == pytest.approx(
      summary["test_iwae_nll_50"] / (64 * np.log(2)), rel=1e-9)
  assert 0 < summary["test_bits_per_dim_stderr"] < 0.5
  # per-pixel marginal over 17 levels fitted on the train split: ~2.5 bits/dim (< log2 17)
  assert 1.5 < summary["categorical_baseline_bits_per_dim"] < np.log2(17)
  run, state = sampling.load(str(tmp_path))
  for sampler in ("mean", "sample"):
    x, _ = run.family.sample(state["ema_params"], jax.random.key(0), 6,
                             SampleRequest(sampler=sampler))
    assert x.shape == (6, 8, 8, 1)
    np.testing.assert_allclose(np.asarray(x) * 16, np.round(np.asarray(x) * 16), atol=1e-5)


@pytest.mark.parametrize("arg, field, value, match", [
    ("likelihood=categorical", "vae.levels", 1, "config.vae.levels"),
    ("likelihood=categorical", "vae.levels", 0, "config.vae.levels"),
    ("likelihood=categorical", "data.pixel_range", "symmetric", "config.data.pixel_range"),
])
def test_bad_categorical_configs_are_refused(arg, field, value, match):
  c = _digits_config(f"runlocal=true,{arg}")
  section, name = field.split(".")
  c[section][name] = value
  with pytest.raises(ValueError, match=match):
    trainer.build(c)
  toy = vae_toy.get_config("runlocal=true")
  toy.vae.likelihood = "categorical"
  toy.vae.levels = 17
  with pytest.raises(ValueError, match="config.vae.likelihood='categorical' needs images"):
    trainer.build(toy)
