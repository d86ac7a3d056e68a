"""The diffusion family end to end: a runlocal DDPM run, sampling with every sampler, config errors."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import ddpm_toy
from experiments import configuration, families, sampling, trainer
from experiments.data import make_dataset
from experiments.families import diffusion as diffusion_family
from experiments.families.protocol import SampleRequest
from research.diffusion import samplers


def _config(arg="runlocal=true"):
  c = ddpm_toy.get_config(arg)
  c.log.progress = False
  c.train.async_checkpoint = False
  c.eval.num_samples = 64
  c.eval.plot_samples = 64
  c.sample.num_steps = 4
  return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("ddpm")
  summary = trainer.train_and_evaluate(_config(), str(workdir))
  return workdir, summary


def test_family_is_registered_and_config_valid():
  assert families.get("diffusion") is diffusion_family.Diffusion
  c = ddpm_toy.get_config()
  configuration.validate(c)
  assert (c.diffusion.schedule, c.diffusion.num_train_steps, c.diffusion.prediction) == (
      "linear", 1000, "eps")
  c = ddpm_toy.get_config("schedule=cosine,prediction=v,sampler=ddim,sample_steps=50")
  configuration.validate(c)
  assert (c.diffusion.schedule, c.sample.sampler, c.sample.num_steps) == ("cosine", "ddim", 50)


def test_runlocal_trains_and_evaluates(trained):
  _, summary = trained
  assert summary["status"] == "done" and summary["step"] == 20
  assert np.isfinite(summary["w2"]) and summary["w2_noise_floor"] > 0
  assert summary["sampler"] == "ddpm" and summary["nfe"] == samplers.nfe("ddpm", 4) == 4


# Every registered sampler, read at collection time (no name is skipped).
@pytest.mark.parametrize("name", samplers.NAMES)
def test_every_sampler_samples_from_the_workdir(trained, tmp_path, name):
  workdir, _ = trained
  if samplers.spec(name).requires is not None:      # lcm: refused (tests/experiments/test_lcm_refusal.py)
    with pytest.raises(ValueError, match="LCM-distilled"):
      sampling.sample_to_file(str(workdir), str(tmp_path / f"{name}.npy"), num_samples=16,
                              seed=1, sampler=name, num_steps=3)
    return
  info = sampling.sample_to_file(str(workdir), str(tmp_path / f"{name}.npy"), num_samples=16,
                                 seed=1, sampler=name, num_steps=3)
  x = np.load(info["out"])
  assert x.shape == (16, 2) and info["step"] == 20
  assert np.all(np.isfinite(x)), name
  prediction = "x0" if name == "consistency" else "eps"
  assert info["nfe"] == samplers.nfe(name, 3, prediction=prediction)


def test_sampling_is_deterministic_and_batch_independent(trained):
  run, state = sampling.load(str(trained[0]))
  params = state["ema_params"]
  a, _ = trainer.sample(run, params, 8, sampler="ddim", num_steps=3)
  b, _ = trainer.sample(run, params, 8, sampler="ddim", num_steps=3)
  np.testing.assert_array_equal(a, b)
  c, _ = trainer.sample(run, params, 8, seed_offset=1, sampler="ddim", num_steps=3)
  assert not np.allclose(a, c)


@pytest.mark.parametrize("schedule,prediction", [("ve", "score"), ("cosine_vp", "v"),
                                                 ("cosine", "x0")])
def test_other_schedules_and_predictions(schedule, prediction):
  c = _config(f"runlocal=true,schedule={schedule},prediction={prediction},sampler=ddim")
  configuration.validate(c)
  family = diffusion_family.Diffusion(c, make_dataset(c.data))
  params = family.init(jax.random.key(0))
  batch = jax.random.normal(jax.random.key(1), (32, 2))
  (loss, metrics), grads = jax.jit(jax.value_and_grad(family.loss, has_aux=True))(
      params, batch, jax.random.key(2), 0)
  assert np.isfinite(float(loss)) and np.isfinite(float(metrics["eps_mse"]))
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  x, stats = family.sample(params, jax.random.key(3), 8, SampleRequest(num_steps=2))
  assert x.shape == (8, 2) and np.all(np.isfinite(x)) and stats["nfe"] == 2
  # model_fn is the teacher interface of the consistency family: (x, t) -> prediction
  out = family.model_fn(params)(batch, jnp.full((32,), 0.5))
  assert out.shape == batch.shape and family.prediction == prediction


@pytest.mark.parametrize("field, value, match", [
    ("diffusion.schedule", "quadratic", "config.diffusion.schedule"),
    ("diffusion.prediction", "noise", "config.diffusion.prediction"),
    ("diffusion.weighting", "elbo", "config.diffusion.weighting"),
    ("diffusion.t_sampler", "beta", "config.diffusion.t_sampler"),
    ("diffusion.num_train_steps", 0, "config.diffusion.num_train_steps"),
    ("diffusion.min_snr_gamma", 0.0, "config.diffusion.min_snr_gamma"),
    ("sample.sampler", "euler_maruyama_9000", "config.sample.sampler"),
    ("sample.num_steps", 0, "config.sample.num_steps"),
    ("sample.clip_x0", "always", "config.sample.clip_x0"),
    ("sample.clip_x0", "static", "pixel_range"),   # toy points are not images in [-1, 1]
])
def test_config_errors_name_the_field(field, value, match):
  c = _config()
  section, key = field.split(".")
  c[section][key] = value
  with pytest.raises(ValueError, match=match):
    configuration.validate(c)


def _with_options(c, options):
  """c with config.sample.options replaced (a string, or a mapping as a Python config may set)."""
  sample = c.sample.to_dict()
  sample["options"] = options
  c.sample = ml_collections.ConfigDict(sample)
  return c


@pytest.mark.parametrize("as_mapping", [False, True])
def test_bad_sampler_options_name_the_field(as_mapping):
  def options(text):
    if not as_mapping:
      return text
    return {k: (int(v) if v.isdigit() else v) for k, v in (i.split("=") for i in text.split(","))}

  c = _with_options(_config(), options("colour=red"))
  with pytest.raises(ValueError, match="config.sample.options.*colour.*spacing"):
    configuration.validate(c)   # the unknown option is named, the valid ones listed
  c = _with_options(_config(), options("spacing=time_uniform"))
  configuration.validate(c)  # ddpm takes spacing
  c = _with_options(_config(), options("order=2"))
  with pytest.raises(ValueError, match="config.sample.options"):
    configuration.validate(c)
  c.sample.sampler = "dpm_solver++"
  configuration.validate(c)  # dpm_solver++ takes order


def test_sampler_options_from_the_command_line_string():
  c = _config()
  c.sample.sampler = "ddim"
  c.sample.options = "eta=0.5,spacing=karras"
  configuration.validate(c)
  family = diffusion_family.Diffusion(c, make_dataset(c.data))
  params = family.init(jax.random.key(0))
  x, stats = family.sample(params, jax.random.key(1), 4)
  y, _ = family.sample(params, jax.random.key(1), 4,
                       SampleRequest(options={"eta": 0.5, "spacing": "karras"}))
  np.testing.assert_array_equal(x, y)   # the config's options are the request's default
  z, _ = family.sample(params, jax.random.key(1), 4, SampleRequest(options="eta=0.0"))
  assert not np.array_equal(x, z)
  with pytest.raises(ValueError, match="SampleRequest.options.*'colour'.*eta"):
    family.check_request(SampleRequest(options={"colour": 1}))
  with pytest.raises(ValueError, match="SampleRequest.sampler"):
    family.check_request(SampleRequest(sampler="nope"))
  with pytest.raises(ValueError, match="SampleRequest.labels.*unconditional"):
    family.check_request(SampleRequest(labels=np.zeros(4, np.int32)))


def test_bad_sampler_name_at_sample_time(trained):
  run, state = sampling.load(str(trained[0]))
  with pytest.raises(ValueError, match="sampler"):
    trainer.sample(run, state["ema_params"], 4, sampler="nope")
