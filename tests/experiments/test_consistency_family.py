"""The consistency family through the trainer: iCT run, CT target EMA, CD from a diffusion workdir."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import consistency_toy, ddpm_toy
from experiments import checkpoint, configuration, logs, trainer
from experiments.families.protocol import SampleRequest
from research.diffusion import consistency as cm


def _config(arg=""):
  c = consistency_toy.get_config("runlocal=true" + ("," + arg if arg else ""))
  c.log.progress = False
  c.train.async_checkpoint = False
  return c


@pytest.fixture(scope="module")
def teacher_workdir(tmp_path_factory):
  """A diffusion workdir (runlocal ddpm_toy on moons) holding an untrained checkpoint."""
  workdir = str(tmp_path_factory.mktemp("teacher"))
  c = ddpm_toy.get_config("runlocal=true")
  c.train.async_checkpoint = False
  run = trainer.build(c)
  configuration.save_json(c, workdir)
  manager = checkpoint.make_manager(workdir, every=c.train.checkpoint_every, async_save=False)
  checkpoint.save(manager, 0, trainer.init_state(run), {"family": "diffusion"}, force=True)
  manager.wait_until_finished()
  manager.close()
  return workdir


def test_ict_runlocal_trains_and_evaluates_one_and_two_step_w2(tmp_path):
  c = _config()
  c.train.num_devices = 1          # a 1-device mesh compiles faster (sharding: tests/experiments)
  summary = trainer.train_and_evaluate(c, str(tmp_path))
  assert summary["status"] == "done" and summary["nfe"] == 1
  for key in ("w2_1step", "w2_2step", "w2_noise_floor", "w2_ratio_1step", "w2_ratio_2step"):
    assert np.isfinite(summary[key]) and summary[key] > 0, key
  rows = [r for r in logs.read_metrics(tmp_path) if "loss" in r]
  assert rows and all(np.isfinite(r["loss"]) for r in rows)
  # The curriculum step is the trainer's step: the logged num_points is the window
  # mean of iCT's N(k) over the steps k = step - log_every .. step - 1.
  total, every = c.train.num_steps, c.train.log_every
  expected = [float(np.mean(cm.ict_num_points(jnp.arange(r["step"] - every, r["step"]), total)))
              for r in rows]
  np.testing.assert_allclose([r["num_points"] for r in rows], expected)


def test_ct_trains_only_online_and_moves_the_target_by_mu_k():
  c = _config("mode=ct")
  c.optim.warmup_steps = 0        # the first step moves the online network
  c.optim.schedule = "constant"
  c.train.num_devices = 1
  run = trainer.build(c)
  state = trainer.init_state(run)
  params0 = jax.device_get(state["params"])
  assert set(params0) == {"online", "target"}          # no step counter in params
  new, metrics = trainer.make_train_step(run)(state, run.keys["train"])
  new = jax.device_get(new["params"])
  mu0 = float(cm.ct_target_decay(cm.ct_num_points(0, c.train.num_steps), s0=2, mu0=0.9))
  np.testing.assert_allclose(mu0, 0.9, rtol=1e-6)          # N(0) = s0 = 2
  np.testing.assert_allclose(float(metrics["target_decay"]), mu0, rtol=1e-6)
  expected = jax.tree.map(lambda t, o: mu0 * t + (1 - mu0) * o, params0["target"], new["online"])
  for got, want in zip(jax.tree.leaves(new["target"]), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  assert not all(np.array_equal(a, b) for a, b in
                 zip(jax.tree.leaves(new["online"]), jax.tree.leaves(params0["online"])))
  # Sampling: num_steps = NFE, config.sample.sigmas as the intermediate level.
  c2 = _config("mode=ct")
  c2.sample.sigmas = (0.8,)
  family = trainer.build(c2).family
  np.testing.assert_allclose(family.sample_sigmas(2), [80.0, 0.8])
  x, stats = family.sample(new, jax.random.key(0), 16, SampleRequest(num_steps=2))
  assert x.shape == (16, 2) and stats == {"nfe": 2} and np.all(np.isfinite(x))
  y, _ = family.sample(new, jax.random.key(0), 16,
                       SampleRequest(num_steps=2, options={"sigmas": (80.0, 0.8)}))
  np.testing.assert_array_equal(x, y)
  with pytest.raises(ValueError, match="SampleRequest.sampler='ddim'"):
    family.check_request(SampleRequest(sampler="ddim"))
  with pytest.raises(ValueError, match="'rho'.*only 'sigmas'"):
    family.check_request(SampleRequest(options={"rho": 3.0}))
  with pytest.raises(ValueError, match="colour"):
    family.check_request(SampleRequest(options={"colour": 1}))
  with pytest.raises(ValueError, match="SampleRequest.labels"):
    family.check_request(SampleRequest(labels=np.zeros(16, np.int32)))


def test_curriculum_reads_the_step_argument():
  c = _config("mode=ict")
  c.train.num_devices = 1
  family = trainer.build(c).family
  params = family.init(jax.random.key(0))
  batch = jnp.ones((8, 2))
  loss_fn = jax.jit(family.loss)
  for step in (0, c.train.num_steps // 2, c.train.num_steps - 1):
    _, metrics = loss_fn(params, batch, jax.random.key(1), jnp.int32(step))
    want = cm.ict_num_points(jnp.float32(step), c.train.num_steps, s0=c.consistency.s0,
                             s1=c.consistency.s1)
    assert int(metrics["num_points"]) == int(want)


def test_cd_distills_from_a_diffusion_workdir(teacher_workdir):
  c = _config(f"mode=cd,teacher={teacher_workdir}")
  c.train.num_devices = 1
  run = trainer.build(c)
  family = run.family
  # The teacher's denoiser: the diffusion model's x0 at t(sigma), with x_t = alpha x.
  from experiments import sampling
  teacher_run, teacher_state = sampling.load(teacher_workdir)
  tf = teacher_run.family
  x, sigma = jnp.ones((4, 2)), jnp.full((4,), 1.5)
  t = tf.schedule.t_from_edm_sigma(sigma)
  alpha, sig = tf.schedule.alpha(t), tf.schedule.sigma(t)
  eps = tf.model_fn(teacher_state["ema_params"])(alpha[:, None] * x, t)
  np.testing.assert_allclose(family._denoiser(x, sigma), x - sig[:, None] / alpha[:, None] * eps,
                             rtol=1e-4, atol=1e-5)
  state = trainer.init_state(run)
  new, metrics = trainer.make_train_step(run)(state, run.keys["train"])
  assert np.isfinite(float(metrics["loss"])) and float(metrics["num_points"]) == 18
  np.testing.assert_allclose(float(metrics["target_decay"]), 0.95, rtol=1e-6)
  # Default 2-step levels of a CD model lie on its 18-point training grid.
  grid = np.asarray(cm.karras_sigmas(jnp.arange(18), 18))
  np.testing.assert_allclose(family.sample_sigmas(2), [80.0, grid[9]], rtol=1e-6)
  # A teacher trained on other data is refused.
  other = _config(f"mode=cd,teacher={teacher_workdir},dataset=ring8")
  with pytest.raises(ValueError, match="config.consistency.teacher_workdir"):
    trainer.build(other)


@pytest.mark.parametrize("field, value, match", [
    ("consistency.mode", "gan", "config.consistency.mode"),
    ("consistency.sigma_min", 0.0, "config.consistency.sigma_min"),
    ("consistency.s0", 2000, "config.consistency.s0"),
    ("consistency.distance", "l1", "config.consistency.distance"),
    ("sample.sampler", "ddpm", "config.sample.sampler"),
    ("sample.sigmas", (0.5, 0.9), "config.sample.sigmas"),
])
def test_bad_config_fields_are_named(field, value, match):
  c = _config()
  section, name = field.split(".")
  c[section][name] = value
  with pytest.raises(ValueError, match=match):
    configuration.validate(c)


def test_cd_without_a_teacher_workdir_is_refused(tmp_path):
  c = _config("mode=cd")
  with pytest.raises(ValueError, match="config.consistency.teacher_workdir"):
    configuration.validate(c)
  c.consistency.teacher_workdir = str(tmp_path / "missing")
  with pytest.raises(ValueError, match="config.consistency.teacher_workdir"):
    configuration.validate(c)
  with pytest.raises(ValueError, match="mode"):
    consistency_toy.get_config("mode=edm")
