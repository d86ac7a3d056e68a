"""Conv VAE and DCGAN (WGAN-GP) families on images: trainer runs on digits with image
metrics, conditional GAN losses, dequantised bits/dim, batched evaluation, bad configs."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import vae_cifar10, vae_conv_digits, wgan_gp_cifar10, wgan_gp_digits
from experiments import trainer
from experiments.data import make_dataset
from experiments.families import vae as vae_family
from experiments.families.gan import GAN
from experiments.families.protocol import SampleRequest
from experiments.families.vae import VAE
from research.losses import gan as gan_losses


@pytest.fixture(autouse=True)
def _fewer_eval_draws(monkeypatch):
  """Held-out L_k from 10 (not 100) draws per k: same code, a tenth of the evaluation time."""
  monkeypatch.setattr(vae_family, "_EVAL_DRAWS", 10)


def _runlocal(module, arg=""):
  c = module.get_config(",".join(filter(None, ["runlocal=true", arg])))
  c.log.progress = False
  c.train.async_checkpoint = False
  c.train.num_devices = 1   # the trainer's sharding has its own tests; one device compiles faster
  return c


def test_conv_vae_runlocal_trains_on_digits_and_reports_image_metrics(tmp_path):
  c = _runlocal(vae_conv_digits)
  c.vae.nll_k, c.vae.nll_chunk = 50, 50
  summary = trainer.train_and_evaluate(c, str(tmp_path))
  assert summary["status"] == "done" and summary["step"] == c.train.num_steps
  for k in ("fd", "precision", "recall", "test_neg_elbo", "test_iwae_nll_50",
            "bernoulli_baseline_nll"):
    assert np.isfinite(summary[k]), k
  assert 0.0 <= summary["precision"] <= 1.0 and 0.0 <= summary["recall"] <= 1.0
  assert summary["fd"] > 0 and summary["num_test"] == 297
  # 20 steps from scratch: the NLL estimate is a number of the baseline's size, not garbage
  assert 15.0 < summary["test_iwae_nll_50"] < 80.0
  names = sorted(os.path.basename(p) for p in summary["figures"])
  assert names == ["vae_samples_0000020.png"]  # latent_dim 16: no latent-plane figures


def test_conv_vae_family_shapes_and_finite_loss():
  c = _runlocal(vae_conv_digits, "latent=2")
  family = VAE(c, make_dataset(c.data))
  params = jax.jit(family.init)(jax.random.key(0))
  assert "convs" in params["model"]["encoder"] and "ups" in params["model"]["decoder"]
  batch = family.dataset.sample(jax.random.key(1), 16)
  loss, metrics = jax.jit(family.loss)(params, batch, jax.random.key(2), 0)
  assert np.isfinite(loss) and np.isclose(loss, -metrics["elbo"], rtol=1e-6)
  x, _ = family.sample(params, jax.random.key(3), 5)
  assert x.shape == (5, 8, 8, 1) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def _gaussian_digits_vae(**vae):
  c = _runlocal(vae_conv_digits)
  c.vae.likelihood = "gaussian"
  c.vae.eval_k, c.vae.nll_k, c.vae.nll_chunk = (1, 5), 20, 10
  for k, v in vae.items():
    c.vae[k] = v
  return VAE(c, make_dataset(c.data))


def test_dequantised_gaussian_vae_reports_bits_per_dim_from_the_nll():
  # digits pixels are p / 16, p in 0..16: 17 levels, bin width 1/16 in the unit range
  family = _gaussian_digits_vae(dequantize_levels=17)
  assert family.bin_width == pytest.approx(1 / 16)
  x = family.dataset.test[:64]
  noisy = np.asarray(family.dequantize(jax.random.key(0), jnp.asarray(x)))
  assert np.all(np.abs(noisy - x) <= 1 / 32 + 1e-7) and abs(np.mean(noisy - x)) < 2e-3
  params = family.init(jax.random.key(1))
  out = family.evaluate(params, jax.random.key(2), family.dataset)
  dims = 64
  expected = (out["test_iwae_nll_20"] - dims * math.log(1 / 16)) / (dims * math.log(2))
  assert out["test_bits_per_dim"] == pytest.approx(expected, rel=1e-9)
  assert np.isfinite(out["gaussian_baseline_bits_per_dim"])
  off = _gaussian_digits_vae()
  assert off.bin_width == 0.0 and off.dequantize(jax.random.key(0), x) is x


def test_batched_evaluation_matches_one_batch_where_it_is_deterministic():
  one, batched = _gaussian_digits_vae(), _gaussian_digits_vae(eval_batch=100)
  params = one.init(jax.random.key(0))
  a = one.evaluate(params, jax.random.key(1), one.dataset)
  b = batched.evaluate(params, jax.random.key(1), batched.dataset)
  # the analytic KL and the active units do not depend on the Monte Carlo keys
  assert b["test_kl"] == pytest.approx(a["test_kl"], rel=1e-5)
  assert b["active_units"] == a["active_units"] and b["num_test"] == a["num_test"] == 297
  assert b["gaussian_baseline_nll"] == a["gaussian_baseline_nll"]
  assert b["test_neg_elbo"] == pytest.approx(a["test_neg_elbo"], rel=0.02)
  assert "test_bits_per_dim" not in a   # no dequantisation: a density, not bits/dim


def test_wgan_gp_dcgan_runlocal_trains_on_digits_and_reports_image_metrics(tmp_path):
  c = _runlocal(wgan_gp_digits)
  summary = trainer.train_and_evaluate(c, str(tmp_path))
  assert summary["status"] == "done" and summary["step"] == 4 and summary["nfe"] == 1
  for k in ("fd", "precision", "recall", "density", "coverage"):
    assert np.isfinite(summary[k]), k
  assert "modes_hit" not in summary          # mode coverage is for the toy mixtures only
  assert summary["plot"].endswith("samples_0000004.png")


def test_dcgan_train_step_updates_both_players_with_finite_metrics():
  c = _runlocal(wgan_gp_digits, "n_critic=2")
  run = trainer.build(c)
  state = trainer.init_state(run)
  before = jax.device_get(state["params"])
  state, metrics = trainer.make_train_step(run)(state, run.keys["train"])
  after = jax.device_get(state["params"])
  for group in ("generator", "critic"):
    assert any(not np.array_equal(x, y) for x, y in
               zip(jax.tree.leaves(before[group]), jax.tree.leaves(after[group]))), group
  assert {"critic/gradient_penalty", "critic/w1_estimate", "generator/loss"} <= set(metrics)
  assert all(np.isfinite(float(v)) for v in metrics.values())
  x, stats = run.family.sample(state["ema_params"], jax.random.key(0), 6)
  assert x.shape == (6, 8, 8, 1) and stats == {"nfe": 1}
  assert float(jnp.max(jnp.abs(x))) <= 1.0   # tanh output: the symmetric pixel range


def test_conditional_dcgan_losses_use_the_real_labels_and_match_the_formula():
  c = _runlocal(wgan_gp_digits, "cond=true")
  family = GAN(c, make_dataset(c.data))
  assert family.conditional and family.num_classes == 10
  params = family.init(jax.random.key(0))
  x, y = make_dataset(c.data).sample_labeled(jax.random.key(1), 16)
  key = jax.random.key(2)
  loss, metrics = jax.jit(family.critic_loss)(params, (x, y), key, 0)
  k_z, k_gp = jax.random.split(key)
  fake = family.generate(params["generator"], k_z, 16, y)
  f = lambda im: family._critic(params["critic"], im, y)  # noqa: E731
  expected = (gan_losses.wgan_critic_loss(f(x), f(fake))
              + c.gan.gp_lambda * gan_losses.gradient_penalty(k_gp, f, x, fake))
  np.testing.assert_allclose(loss, expected, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(metrics["w1_estimate"], jnp.mean(f(x)) - jnp.mean(f(fake)),
                             rtol=1e-4, atol=1e-5)
  # the labels matter: other labels give another critic loss
  other, _ = family.critic_loss(params, (x, (y + 1) % 10), key, 0)
  assert not np.isclose(float(other), float(loss))
  g_loss, _ = family.generator_loss(params, (x, y), key, 0)
  np.testing.assert_allclose(g_loss, -jnp.mean(f(family.generate(params["generator"], key, 16, y))),
                             rtol=1e-5, atol=1e-6)
  samples, _ = family.sample(params, jax.random.key(3), 12)
  assert samples.shape == (12, 8, 8, 1)
  with pytest.raises(ValueError, match="labels"):
    family.sample(params, jax.random.key(3), 12, SampleRequest(labels=jnp.zeros((5,), jnp.int32)))
  uncond_config = _runlocal(wgan_gp_digits)
  uncond = GAN(uncond_config, make_dataset(uncond_config.data))
  with pytest.raises(ValueError, match="labels"):
    uncond.sample(uncond.init(jax.random.key(0)), jax.random.key(3), 4,
                  SampleRequest(labels=jnp.zeros(4, int)))


@pytest.mark.parametrize("field, value, match", [
    ("data.pixel_range", "unit", "config.data.pixel_range"),
    ("model.kind", "resnet", "config.model.kind"),
    ("model.channels", 0, "config.model.channels"),
    ("model.critic_norm", "batch", "config.model.critic_norm"),
    ("model.generator_norm", "group", "config.model.generator_norm"),
    ("model.num_classes", 7, "config.model.num_classes"),
    ("data.name", "ring8", r"needs \(H, W, C\) images"),
])
def test_bad_dcgan_configs_raise_naming_the_field(field, value, match):
  c = _runlocal(wgan_gp_digits)
  section, key = field.split(".")
  c[section][key] = value
  with pytest.raises(ValueError, match=match):
    trainer.build(c)


@pytest.mark.parametrize("field, value, match", [
    ("vae.network", "resnet", "config.vae.network"),
    ("vae.channels", (), "config.vae.channels"),
    ("vae.channels", (4, 4, 4, 4), "config.vae.channels"),   # 8x8 cannot take 4 stride-2 stages
    ("data.pixel_range", "symmetric", "config.data.pixel_range"),   # Bernoulli needs [0, 1]
    ("vae.dequantize_levels", 256, "config.vae.dequantize_levels"),  # Bernoulli: no dequantising
    ("vae.dequantize_levels", 1, "config.vae.dequantize_levels"),
    ("vae.eval_batch", -1, "config.vae.eval_batch"),
    ("data.name", "moons", "config.vae.network='conv' needs"),
])
def test_bad_conv_vae_configs_raise_naming_the_field(field, value, match):
  c = _runlocal(vae_conv_digits)
  section, key = field.split(".")
  c[section][key] = value
  with pytest.raises(ValueError, match=match):
    trainer.build(c)


@pytest.mark.parametrize("dataset, shape", [("cifar10", (32, 32, 3)), ("mnist", (28, 28, 1)),
                                            ("celeb_a", (64, 64, 3))])
def test_paper_configs_build_their_networks_for_each_dataset(dataset, shape):
  """Full-size and runlocal configs pass the family checks (abstract init: nothing runs)."""
  for arg in (f"dataset={dataset}", f"dataset={dataset},runlocal=true"):
    for module in (wgan_gp_cifar10, vae_cifar10):
      c = module.get_config(arg)
      family = (GAN if c.family == "gan" else VAE)
      family.check_config(c)
      params = jax.eval_shape(family(c, make_dataset(c.data)).init, jax.random.key(0))
      assert jax.tree.leaves(params)
      if "runlocal" in arg:
        assert c.train.batch_size % 8 == 0 and c.train.num_steps == 2
        assert c.eval.num_samples <= 16
  c = wgan_gp_cifar10.get_config(f"dataset={dataset}")
  assert (c.train.batch_size, c.train.num_steps, c.gan.n_critic, c.gan.gp_lambda) == (64, 100_000, 5, 10.0)
  assert (c.optim.lr, c.optim.schedule, c.optim.final_lr_fraction, c.optim.b1, c.optim.b2) == (
      2e-4, "linear", 0.0, 0.0, 0.9)
  assert c.optim_critic.to_dict() == c.optim.to_dict()
  v = vae_cifar10.get_config(f"dataset={dataset}")
  assert GAN(c, make_dataset(c.data)).data_shape == VAE(v, make_dataset(v.data)).data_shape == shape


def test_paper_config_arguments_are_checked():
  with pytest.raises(ValueError, match="dataset"):
    wgan_gp_cifar10.get_config("dataset=svhn")
  with pytest.raises(ValueError, match="dataset"):
    vae_cifar10.get_config("dataset=svhn")
  with pytest.raises(ValueError, match="cond"):
    wgan_gp_cifar10.get_config("dataset=celeb_a,cond=true")
  with pytest.raises(ValueError, match="dataset"):
    wgan_gp_digits.get_config("dataset=mnist")
