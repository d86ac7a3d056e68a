"""The lcm family: config refusals before anything compiles, the student initialised from the
teacher (equal to it at every w), the EMA target, request refusals, and (slow) a runlocal
teacher -> LCM distillation -> 1 / 2 / 4-step sampling through the trainer."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ddpm_digits, lcm_digits
from experiments import checkpoint, configuration, trainer
from experiments.families.protocol import SampleRequest
from research.diffusion import samplers

HAS_SAMPLER = "lcm" in samplers.NAMES
needs_sampler = pytest.mark.skipif(not HAS_SAMPLER, reason="the lcm sampler is not registered")


def _save_untrained(config, workdir):
  """A workdir holding config.json and an untrained step-0 checkpoint (nothing trained)."""
  run = trainer.build(config)
  configuration.save_json(config, workdir)
  manager = checkpoint.make_manager(workdir, every=config.train.checkpoint_every,
                                    async_save=False)
  checkpoint.save(manager, 0, trainer.init_state(run), {"family": config.family}, force=True)
  manager.wait_until_finished()
  manager.close()
  return workdir


def _teacher_config(arg="runlocal=true,cond=true"):
  c = ddpm_digits.get_config(arg)
  c.train.async_checkpoint = False
  c.log.progress = False
  c.train.num_devices = 1
  return c


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  """A class-conditional runlocal digits DDPM workdir (untrained, perturbed weights)."""
  return _save_untrained(_teacher_config(), str(tmp_path_factory.mktemp("teacher")))


@pytest.fixture(scope="module")
def uncond_teacher(tmp_path_factory):
  return _save_untrained(_teacher_config("runlocal=true"),
                         str(tmp_path_factory.mktemp("uncond_teacher")))


def _config(teacher, arg=""):
  c = lcm_digits.get_config(f"runlocal=true,teacher={teacher}" + ("," + arg if arg else ""))
  c.train.async_checkpoint = False
  c.train.num_devices = 1
  return c


@pytest.fixture(scope="module")
def family(teacher):
  return trainer.build(_config(teacher)).family


def test_config_copies_the_teachers_data_and_network(teacher):
  c = _config(teacher)
  t = configuration.load_json(teacher)
  assert c.data.to_dict() == t.data.to_dict()
  assert c.model.guidance_embed_dim == 64 and c.model.channels == t.model.channels
  assert c.lcm.clip_x0 == t.sample.clip_x0 == "static"
  assert c.sample.sampler == "lcm" and c.sample.guidance_scale == 1.5
  configuration.validate(c)


def _edited_teacher(teacher, tmp_path, edit):
  path = str(tmp_path / "edited")
  os.makedirs(path)
  with open(os.path.join(teacher, "config.json")) as f:
    cfg = json.load(f)
  edit(cfg)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(cfg, f)
  return path


@pytest.mark.parametrize("edit, match", [
    (lambda c: c.update(family="vae"), "must be a diffusion model"),
    (lambda c: c["diffusion"].update(schedule="cosine_vp"), "continuous schedule 'cosine_vp'"),
    (lambda c: c["diffusion"].update(prediction="score"), "predicts 'score'"),
    (lambda c: c["diffusion"].update(num_train_steps=990), "config.lcm.skip=20 must divide"),
    (lambda c: c["data"].update(name="digits16"), "config.data"),
    (lambda c: c["model"].update(channels=16), r"config.model differs .*\['channels'\]"),
])
def test_unusable_teachers_are_refused_before_anything_compiles(teacher, tmp_path, edit, match):
  edited = _edited_teacher(teacher, tmp_path, edit)
  c = _config(teacher)
  c.lcm.teacher_workdir = edited
  with pytest.raises(ValueError, match=match):
    configuration.validate(c)


@pytest.mark.parametrize("field, value, match", [
    ("lcm.teacher_workdir", "/nonexistent/teacher", "config.lcm.teacher_workdir.*no config.json"),
    ("lcm.teacher_workdir", "", "config.lcm.teacher_workdir must name"),
    ("lcm.skip", 0, "config.lcm.skip"),
    ("lcm.w_min", 3.0, "config.lcm.w_min/w_max"),
    ("lcm.w_max", -1.0, "config.lcm.w_max"),
    ("lcm.distance", "l1", "config.lcm.distance"),
    ("lcm.mu", 1.5, "config.lcm.mu"),
    ("lcm.clip_x0", "dynamic", "config.lcm.clip_x0"),
    ("sample.sampler", "ddim", "config.sample.sampler"),
    ("sample.guidance_scale", 5.0, "config.sample.guidance_scale=5.0 is s = w \\+ 1"),
    ("model.guidance_embed_dim", 2, "config.model.guidance_embed_dim"),
])
def test_bad_config_fields_are_named(teacher, field, value, match):
  c = _config(teacher)
  section, name = field.split(".")
  c[section][name] = value
  with pytest.raises(ValueError, match=match):
    configuration.validate(c)


def test_unconditional_teacher_needs_no_guidance_embedding(teacher, tmp_path):
  edited = _edited_teacher(teacher, tmp_path, lambda c: c["model"].update(num_classes=0,
                                                                           label_dropout=0.0))
  c = _config(edited)
  assert c.model.guidance_embed_dim == 0 and c.sample.guidance_scale == 1.0
  configuration.validate(c)
  c.model.guidance_embed_dim = 16
  with pytest.raises(ValueError, match="guidance_embed_dim=16 needs a class-conditional"):
    configuration.validate(c)


@pytest.mark.slow
def test_an_unconditional_student_refuses_guidance(uncond_teacher):
  fam = trainer.build(_config(uncond_teacher)).family
  with pytest.raises(ValueError, match="SampleRequest.guidance_scale.*unconditional"):
    fam.check_request(SampleRequest(guidance_scale=2.0))
  params = fam.init(jax.random.key(0))
  assert "guidance_proj" not in params["online"]


def test_student_starts_as_the_teacher_at_every_w(family):
  params = jax.jit(family.init)(jax.random.key(0))
  assert set(params) == {"online", "target"}
  online, teacher = params["online"], family.teacher.params
  assert set(online) - set(teacher) == {"guidance_proj"}
  assert not np.any(np.asarray(online["guidance_proj"]["kernel"]))
  for a, b in zip(jax.tree.leaves({k: online[k] for k in teacher}), jax.tree.leaves(teacher)):
    np.testing.assert_array_equal(a, b)
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
  t, y = jnp.array([0.02, 0.3, 0.7, 1.0]), jnp.array([0, 3, 9, 10])
  tf = family.teacher.family.model_fn
  want = jax.jit(lambda p, y: tf(p, y)(x, t))(teacher, y)
  student = jax.jit(lambda p, w: family.model_fn(p, y)(x, t, w))
  for w in (0.0, 1.0, 2.0):
    np.testing.assert_allclose(student(online, jnp.full((4,), w)), want, rtol=1e-6, atol=1e-6)
  # The guided teacher at w is CFG at SD scale s = w + 1.
  g = jax.jit(lambda: family.teacher_fn(y)(x, t, jnp.full((4,), 1.0)))()
  null = jax.jit(lambda p: tf(p, jnp.full((4,), 10))(x, t))(teacher)
  np.testing.assert_allclose(g, 2.0 * want - null, rtol=1e-5, atol=1e-5)


def test_loss_and_the_ema_target(family):
  params = jax.jit(family.init)(jax.random.key(0))
  moved = dict(params, online=jax.tree.map(lambda p: p + 0.01, params["online"]))
  new = family.after_step(moved, jnp.int32(3))
  mu = family.config.lcm.mu
  for got, t0, o in zip(jax.tree.leaves(new["target"]), jax.tree.leaves(params["target"]),
                        jax.tree.leaves(moved["online"])):
    np.testing.assert_allclose(got, mu * t0 + (1 - mu) * o, rtol=1e-6, atol=1e-7)
  x = jax.random.uniform(jax.random.key(2), (8, 8, 8, 1), minval=-1, maxval=1)
  y = jnp.arange(8) % 10
  loss, metrics = jax.jit(family.loss)(params, (x, y), jax.random.key(3), jnp.int32(0))
  assert np.isfinite(float(loss)) and 0.0 <= float(metrics["w"]) <= 2.0
  assert [p.name for p in family.phases()] == ["online"] and family.phases()[0].group == "online"


@pytest.mark.parametrize("request_fields, match", [
    (dict(sampler="ddim"), "SampleRequest.sampler='ddim'"),
    (dict(clip_x0="static"), "SampleRequest.clip_x0"),
    (dict(guidance_scale=4.0), "SampleRequest.guidance_scale=4.0 is s = w \\+ 1"),
    (dict(guidance_scale=0.5), "outside the distilled range"),
    (dict(prompt="a"), "SampleRequest.prompt"),
])
def test_request_refusals(family, request_fields, match):
  with pytest.raises(ValueError, match=match):
    family.check_request(SampleRequest(**request_fields))


@needs_sampler
def test_fixed_sampler_options_are_refused_and_labels_checked(family):
  with pytest.raises(ValueError, match="original_inference_steps"):
    family.check_request(SampleRequest(options={"original_inference_steps": 10}))
  with pytest.raises(ValueError, match="SampleRequest.labels"):
    family.check_request(SampleRequest(labels=np.zeros(3, np.int32)), n=4)
  family.check_request(SampleRequest(num_steps=4, guidance_scale=3.0))


@pytest.mark.slow
@needs_sampler
def test_runlocal_teacher_distil_and_sample_1_2_4_steps(tmp_path):
  """ddpm_digits runlocal cond -> lcm_digits runlocal -> samples at 1, 2 and 4 steps."""
  teacher_dir, lcm_dir = str(tmp_path / "teacher"), str(tmp_path / "lcm")
  summary = trainer.train_and_evaluate(_teacher_config(), teacher_dir)
  assert summary["status"] == "done"
  c = _config(teacher_dir)
  c.log.progress = False
  summary = trainer.train_and_evaluate(c, lcm_dir)
  assert summary["status"] == "done" and summary["sampler"] == "lcm"
  assert summary["nfe"] == c.sample.num_steps == summary["network_passes_per_example"]
  from experiments import run as run_lib
  run, state = run_lib.load(lcm_dir)
  params = state["ema_params"]
  for steps in (1, 2, 4):
    x, stats = run.family.sample(params, jax.random.key(steps), 10,
                                 SampleRequest(num_steps=steps, guidance_scale=2.0))
    assert x.shape == (10, 8, 8, 1) and np.all(np.isfinite(np.asarray(x)))
    assert stats == {"nfe": steps, "network_passes_per_example": steps}
  # One step is deterministic given the key; the guidance scale changes the samples.
  a, _ = run.family.sample(params, jax.random.key(0), 10, SampleRequest(num_steps=1))
  b, _ = run.family.sample(params, jax.random.key(0), 10, SampleRequest(num_steps=1))
  c3, _ = run.family.sample(params, jax.random.key(0), 10,
                            SampleRequest(num_steps=1, guidance_scale=3.0))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c3)
  shutil.rmtree(tmp_path, ignore_errors=True)
