"""The energy-based model family through the trainer: a runlocal run with its figure, the
replay buffer in the checkpoint and a bit-exact resume, sampling requests and refusals,
config errors; slow: a real ring8 training."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ebm_digits, ebm_toy
from experiments import evaluation, sampling, trainer
from experiments.data import make_dataset
from experiments.families.ebm import EBM
from experiments.families.protocol import SampleRequest
from research.losses import ebm as ebm_lib
from tests.experiments.helpers import assert_trees_equal, quiet


def _config(module=ebm_toy, arg=""):
  return quiet(module.get_config(",".join(filter(None, ["runlocal=true", arg]))))


def _family(c):
  return EBM(c, make_dataset(c.data))


def test_runlocal_trains_evaluates_and_draws_the_density_figure(tmp_path):
  c = _config(arg="dataset=ring8")
  summary = trainer.train_and_evaluate(c, str(tmp_path))
  assert summary["status"] == "done" and summary["step"] == 10
  assert summary["nfe"] == c.sample.num_steps and summary["sampler"] == "langevin"
  for key in ("w2", "w2_noise_floor", "energy", "test_nll", "kl", "data_entropy", "buffer_w2"):
    assert np.isfinite(summary[key]), key
  # NLL = H + KL, with the held-out points' cross-entropy in place of the exact H
  assert summary["test_nll"] == pytest.approx(summary["data_entropy"] + summary["kl"], abs=0.1)
  [figure] = summary["figures"]
  assert figure.endswith("ebm_density_0000010.png") and os.path.getsize(figure) > 1000
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  logged = [r for r in rows if r.get("step") == 10 and "cd" in r][0]
  for key in ("energy_data", "energy_model", "regulariser", "chain_energy_start",
              "chain_grad_norm", "reinit_fraction"):
    assert np.isfinite(logged[key]), key


def test_a_train_step_trains_the_energy_and_after_step_rewrites_the_buffer():
  c = _config()
  run = trainer.build(c)
  state = trainer.init_state(run)
  before = jax.device_get(state["params"])
  assert set(state["opt_state"]) == {"energy"}            # the buffer has no optimizer
  state, metrics = trainer.make_train_step(run)(state, run.keys["train"])
  after = jax.device_get(state["params"])
  assert any(not np.array_equal(x, y) for x, y in
             zip(jax.tree.leaves(before["energy"]), jax.tree.leaves(after["energy"])))
  changed = np.any(before["buffer"]["x"] != after["buffer"]["x"], axis=-1)
  assert changed.sum() == c.train.batch_size              # one batch of chains written back
  # the new negatives are exactly the entries written back
  written = after["buffer"]["x"][changed]
  assert {tuple(r) for r in written} == {tuple(r) for r in after["buffer"]["negatives"]}
  assert after["buffer"]["seed"] == before["buffer"]["seed"]
  lo, hi = c.ebm.data_range
  assert after["buffer"]["x"].min() >= lo and after["buffer"]["x"].max() <= hi   # clamped
  assert all(np.isfinite(float(v)) for v in metrics.values())
  # the loss is the CD loss of the batch against the stored negatives
  family = run.family
  batch = jnp.ones((c.train.batch_size, 2))
  loss, _ = family.loss(before, batch, jax.random.key(0), 0)
  expected, _ = ebm_lib.cd_loss(family.energy_fn(before["energy"]), batch,
                                before["buffer"]["negatives"], alpha=c.ebm.alpha)
  np.testing.assert_allclose(loss, expected, rtol=1e-6)


@pytest.mark.slow   # the default suite resumes ebm in tests/experiments/test_resume_all_families.py
def test_the_buffer_is_checkpointed_and_a_resumed_run_ends_bit_identical(tmp_path, monkeypatch):
  monkeypatch.setattr(evaluation, "evaluate_run",
                      lambda run, workdir, state, compile_s: {"status": "done"})
  c = _config()
  c.train.num_steps, c.train.checkpoint_every = 8, 4
  full, resumed = tmp_path / "full", tmp_path / "resumed"
  trainer.train_and_evaluate(c, str(full))
  shutil.copytree(full, resumed)
  shutil.rmtree(resumed / "checkpoints" / "8")            # as if killed after step 4's save
  trainer.train_and_evaluate(c, str(resumed))
  run, state = sampling.load(str(resumed))
  _, reference = sampling.load(str(full))
  assert_trees_equal(state, reference)
  buffer = jax.device_get(state["params"]["buffer"])
  assert buffer["x"].shape == (c.ebm.buffer_size, 2)
  assert buffer["negatives"].shape == (c.train.batch_size, 2)
  # the stored buffer is the restored one, and it moved away from its step-0 noise
  init = jax.device_get(trainer.init_state(run)["params"]["buffer"]["x"])
  assert not np.array_equal(init, buffer["x"])
  # the step-4 checkpoint the resumed run started from holds that step's buffer
  _, state4 = sampling.load(str(full), step=4)
  buffer4 = jax.device_get(state4["params"]["buffer"]["x"])
  assert not np.array_equal(buffer4, init) and not np.array_equal(buffer4, buffer["x"])


def test_sampling_requests_langevin_mala_and_the_buffer():
  c = _config()
  family = _family(c)
  params = family.init(jax.random.key(0))
  x, stats = family.sample(params, jax.random.key(1), 16)
  assert x.shape == (16, 2) and stats["nfe"] == c.sample.num_steps
  x, stats = family.sample(params, jax.random.key(1), 16, SampleRequest(num_steps=3))
  assert stats["nfe"] == 3
  x, stats = family.sample(params, jax.random.key(1), 16,
                           SampleRequest(sampler="mala", num_steps=4, options="step_size=0.01"))
  assert x.shape == (16, 2) and stats["nfe"] == 5 and 0 <= stats["acceptance_rate"] <= 1
  # init=buffer with no steps of noise: samples are buffer entries (noise 0, tiny step)
  x, _ = family.sample(params, jax.random.key(2), 8, SampleRequest(
      num_steps=1, options="init=buffer,noise_scale=0,step_size=1e-12"))
  buffer = {tuple(r) for r in np.asarray(params["buffer"]["x"])}
  assert all(tuple(r) in buffer for r in np.asarray(x))
  assert family.describe(SampleRequest(options="init=buffer")) == "langevin_10_initbuffer"
  assert family.describe(None) == "langevin_10"


@pytest.mark.parametrize("request_, match", [
    (SampleRequest(sampler="ddim"), "SampleRequest.sampler.*'langevin', 'mala'"),
    (SampleRequest(labels=np.zeros(4, np.int32)), "SampleRequest.labels.*unconditional"),
    (SampleRequest(guidance_scale=2.0), "SampleRequest.guidance_scale"),
    (SampleRequest(clip_x0="static"), "SampleRequest.clip_x0"),
    (SampleRequest(prompt="a"), "SampleRequest.prompt"),
    (SampleRequest(options="eta=1"), "SampleRequest.options.*eta"),
    (SampleRequest(options="step_size=0"), "step_size"),
    (SampleRequest(options="noise_scale=-1"), "noise_scale"),
    (SampleRequest(options="init=data"), "init"),
    (SampleRequest(sampler="mala", options="noise_scale=0.1"), "noise_scale"),
])
def test_requests_the_ebm_cannot_honour_are_refused_before_sampling(request_, match):
  family = _family(_config())
  with pytest.raises(ValueError, match=match):
    family.check_request(request_)
  with pytest.raises(ValueError, match=match):
    family.sample(family.init(jax.random.key(0)), jax.random.key(1), 4, request_)


def test_num_steps_below_one_and_too_many_buffer_samples_are_refused():
  with pytest.raises(ValueError, match="SampleRequest.num_steps"):
    SampleRequest(num_steps=0)
  c = _config()
  family = _family(c)
  with pytest.raises(ValueError, match="init=buffer.*buffer_size"):
    family.check_request(SampleRequest(options="init=buffer"), c.ebm.buffer_size + 1)
  family.check_request(SampleRequest(options="init=buffer"), c.ebm.buffer_size)


@pytest.mark.parametrize("field, value, match", [
    ("ebm.alpha", -1.0, "config.ebm.alpha"),
    ("ebm.buffer_size", 0, "config.ebm.buffer_size"),
    ("ebm.buffer_size", 10, "config.ebm.buffer_size"),       # < batch size
    ("ebm.reinit_prob", 1.5, "config.ebm.reinit_prob"),
    ("ebm.sampler", "hmc", "config.ebm.sampler"),
    ("ebm.num_steps", 0, "config.ebm.num_steps"),
    ("ebm.step_size", 0.0, "config.ebm.step_size"),
    ("ebm.noise_scale", -0.1, "config.ebm.noise_scale"),
    ("ebm.grad_clip", -1.0, "config.ebm.grad_clip"),
    ("ebm.data_range", (1.0, -1.0), "config.ebm.data_range"),
    ("model.activation", "gelu", "config.model.activation"),
    ("model.hidden", (), "config.model.hidden"),
    ("sample.sampler", "euler", "config.sample.sampler"),
    ("sample.num_steps", 0, "config.sample.num_steps"),
    ("sample.options", "init=data", "config.sample.options"),
])
def test_bad_config_raises_value_error_naming_the_field(field, value, match):
  c = _config()
  section, key = field.split(".")
  c[section][key] = value
  with pytest.raises(ValueError, match=match):
    trainer.build(c)


def test_an_ema_is_refused_because_the_buffer_is_a_parameter_group():
  c = _config()
  c.ema_decay = 0.99
  with pytest.raises(ValueError, match="config.ema_decay must be 0 for the ebm family"):
    trainer.build(c)


@pytest.mark.slow   # ~20 s; the toy runlocal test covers the family end to end by default
def test_digits_runlocal_builds_and_takes_a_step():
  c = _config(ebm_digits)
  run = trainer.build(c)
  state = trainer.init_state(run)
  assert state["params"]["buffer"]["x"].shape == (c.ebm.buffer_size, 8, 8, 1)
  state, metrics = trainer.make_train_step(run)(state, run.keys["train"])
  assert np.isfinite(float(metrics["loss"]))
  x, stats = run.family.sample(state["params"], jax.random.key(0), 4)
  assert x.shape == (4, 8, 8, 1) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0


@pytest.mark.slow
def test_ring8_training_gets_close_to_the_data_floor(tmp_path):
  """Measured: docs/ebm.md (ring8, 2000 steps)."""
  c = quiet(ebm_toy.get_config("dataset=ring8,steps=2000"))
  summary = trainer.train_and_evaluate(c, str(tmp_path))
  assert summary["w2"] < 3 * summary["w2_noise_floor"], summary
  assert summary["kl"] < 1.0, summary
