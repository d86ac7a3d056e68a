"""Latent diffusion plumbing: the autoencoder family's stored scale, LatentDataset, the refusals,
and a runlocal autoencoder -> class-conditional latent diffusion run scored on decoded digits."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import autoencoder_digits, ldm_digits
from experiments import configuration, families, latent, sampling, trainer
from experiments.data import dataset_info, make_dataset
from experiments.families.protocol import SampleRequest
from research.losses import autoencoder as ae_loss
from tests.experiments.helpers import quiet

AE_STEPS = 6


@pytest.fixture(scope="module")
def ae_workdir(tmp_path_factory):
  """A tiny runlocal autoencoder (6 steps, checkpoints at 3 and 6, every train image sets s)."""
  c = quiet(autoencoder_digits.get_config("runlocal=true"))
  c.train.update(num_steps=AE_STEPS, checkpoint_every=3, log_every=3)
  c.autoencoder.scale_images = 0
  c.eval.num_samples = 16
  workdir = str(tmp_path_factory.mktemp("ae"))
  summary = trainer.train_and_evaluate(c, workdir)
  assert summary["status"] == "done"
  return workdir, summary


def _data(workdir, **fields):
  c = ldm_digits.get_config(f"ae={workdir},runlocal=true")
  c.data.update(fields)
  return c.data


def test_autoencoder_run_reports_reconstruction_metrics(ae_workdir):
  _, summary = ae_workdir
  for k in ("fd", "precision", "recall", "test_recon_mse", "test_psnr", "test_kl", "latent_scale"):
    assert np.isfinite(summary[k]), k
  assert summary["latent_shape"] == [4, 4, 1]
  assert summary["test_latent_std_scaled"] == pytest.approx(1.0, rel=0.3)


def test_scale_is_checkpointed_with_its_own_encoder(ae_workdir):
  workdir, _ = ae_workdir
  run, _ = sampling.load(workdir)
  train = jnp.asarray(run.dataset.train)
  scales = {}
  for step in (3, AE_STEPS):
    state = sampling.restore_readonly(workdir, run, step)
    params = state["ema_params"]
    stored = float(run.family.scale(params))
    fresh = float(ae_loss.latent_scale_factor(run.family.encode(params, train)))
    np.testing.assert_allclose(stored, fresh, rtol=1e-5)
    np.testing.assert_allclose(float(run.family.scale(state["params"])), stored, rtol=1e-6)
    scales[step] = stored
  assert scales[3] != scales[AE_STEPS]   # each restored step carries its own scale


def test_latent_dataset_shapes_labels_and_determinism(ae_workdir):
  workdir, _ = ae_workdir
  data = _data(workdir)
  info = dataset_info(data)
  assert info.shape == (4, 4, 1) and info.latent and info.num_classes == 10
  ds = make_dataset(data)
  assert isinstance(ds, latent.LatentDataset)
  assert ds.shape == (4, 4, 1) and ds.num_classes == 10 and ds.pixels.shape == (8, 8, 1)
  assert ds.train.shape == (1500, 4, 4, 1) and ds.test.shape == (297, 4, 4, 1)
  np.testing.assert_array_equal(ds.train_labels, ds.pixels.train_labels)
  np.testing.assert_array_equal(ds.test_labels, ds.pixels.test_labels)
  # every training image set the scale: the scaled training latents have std 1
  np.testing.assert_allclose(np.std(ds.train), 1.0, rtol=1e-4)
  np.testing.assert_allclose(ds.encode(ds.pixels.test), ds.test, rtol=1e-5, atol=1e-6)
  key = jax.random.key(3)
  x, y = ds.sample_labeled(key, 8)
  np.testing.assert_array_equal(x, ds.sample(key, 8))
  idx = jax.random.randint(key, (8,), 0, 1500)
  np.testing.assert_array_equal(y, ds.pixels.train_labels[np.asarray(idx)])
  hx, hy = ds.heldout_labeled(key, 5)
  _, py = ds.pixels.heldout_labeled(key, 5)
  np.testing.assert_array_equal(hy, py)
  assert make_dataset(data) is ds                       # encoded once per process
  latent._CACHE.clear()                                 # noqa: SLF001
  again = make_dataset(data)
  np.testing.assert_array_equal(again.train, ds.train)  # deterministic encoding
  images = again.decode(hx)
  assert images.shape == (5, 8, 8, 1)
  assert float(jnp.min(images)) >= -1.0 and float(jnp.max(images)) <= 1.0
  with pytest.raises(TypeError, match="decode"):
    ds.to_unit(hx)


def _fake_workdir(tmp_path, source, name, edit=None, steps=None):
  """A copy of the autoencoder's config.json (edited) with empty checkpoint step directories."""
  target = tmp_path / name
  target.mkdir()
  with open(os.path.join(source, "config.json")) as f:
    cfg = json.load(f)
  if edit:
    edit(cfg)
  (target / "config.json").write_text(json.dumps(cfg))
  for s in steps or ():
    (target / "checkpoints" / str(s)).mkdir(parents=True)
  return str(target)


def test_refusals_name_the_field_before_anything_compiles(ae_workdir, tmp_path):
  workdir, _ = ae_workdir
  cases = {
      "no such directory": str(tmp_path / "missing"),
      "holds no config.json": str(tmp_path),
      "holds a 'diffusion' run": _fake_workdir(tmp_path, workdir, "ddpm",
                                               lambda c: c.update(family="diffusion"), [6]),
      "trained on 'digits16'": _fake_workdir(tmp_path, workdir, "d16",
                                             lambda c: c["data"].update(name="digits16"), [6]),
      "has no checkpoint": _fake_workdir(tmp_path, workdir, "empty"),
      "not finished": _fake_workdir(tmp_path, workdir, "unfinished", steps=[3]),
  }
  for message, path in cases.items():
    c = ldm_digits.get_config(f"ae={path},runlocal=true")
    with pytest.raises(ValueError, match=f"config.data.autoencoder_workdir.*{message}"):
      configuration.validate(c)
  c = ldm_digits.get_config(f"ae={workdir},runlocal=true")
  c.sample.clip_x0 = "static"
  with pytest.raises(ValueError, match="config.sample.clip_x0='static'.*not in \\[-1, 1\\]"):
    configuration.validate(c)
  c = ldm_digits.get_config(f"ae={workdir},runlocal=true")
  c.data.dequantize = 17
  with pytest.raises(ValueError, match="config.data.dequantize=17 cannot be combined"):
    configuration.validate(c)
  c = autoencoder_digits.get_config("runlocal=true")
  c.ema_decay = 0.999
  with pytest.raises(ValueError, match="config.ema_decay must be 0"):
    configuration.validate(c)


def test_unconditional_latent_model_refuses_guidance_and_clipping(ae_workdir):
  workdir, _ = ae_workdir
  c = ldm_digits.get_config(f"ae={workdir},runlocal=true")
  configuration.validate(c)
  family = families.get(c.family)(c, make_dataset(c.data))   # the family, nothing compiled
  assert family.data_shape == (4, 4, 1)
  with pytest.raises(ValueError, match="guidance_scale.*unconditional"):
    family.check_request(SampleRequest(guidance_scale=2.0))
  with pytest.raises(ValueError, match="SampleRequest.clip_x0='dynamic'.*not in \\[-1, 1\\]"):
    family.check_request(SampleRequest(clip_x0="dynamic"))


@pytest.mark.slow
def test_runlocal_class_conditional_latent_diffusion_scores_decoded_digits(ae_workdir, tmp_path):
  workdir, _ = ae_workdir
  c = quiet(ldm_digits.get_config(f"ae={workdir},cond=true,guidance=2.0,runlocal=true"))
  c.eval.num_samples = 20
  summary = trainer.train_and_evaluate(c, str(tmp_path / "ldm"))
  assert summary["status"] == "done"
  for k in ("fd", "precision", "recall", "class_accuracy"):
    assert np.isfinite(summary[k]), k
  out = sampling.sample_to_file(str(tmp_path / "ldm"), str(tmp_path / "s.npy"), num_samples=4,
                                labels=np.arange(4), guidance_scale=1.5)
  x = np.load(out["out"])
  assert x.shape == (4, 8, 8, 1) and x.min() >= -1.0 and x.max() <= 1.0
  shutil.rmtree(tmp_path / "ldm")


# The mechanism is one (experiments/latent.py); the default suite runs it for diffusion, the
# other two families (~1 min of CPU each) with -m slow.
@pytest.mark.parametrize("family", ["diffusion",
                                    pytest.param("flow_matching", marks=pytest.mark.slow),
                                    pytest.param("consistency", marks=pytest.mark.slow)])
def test_each_family_trains_and_samples_in_the_latent_space(ae_workdir, family):
  """One loss and one 1-step sample per family on the 4x4x1 latents; run.sample decodes."""
  from experiments import run as run_lib
  workdir, _ = ae_workdir
  c = ldm_digits.get_config(f"ae={workdir},family={family},cond=true,runlocal=true")
  configuration.validate(c)
  run = run_lib.build(c)
  assert run.family.data_shape == (4, 4, 1) and run.dataset.shape == (4, 4, 1)
  params = run.family.init(jax.random.key(0))
  x, y = run.dataset.sample_labeled(jax.random.key(1), 8)
  loss, _ = jax.jit(run.family.loss)(params, (x, y), jax.random.key(2), jnp.int32(0))
  assert np.isfinite(float(loss))
  images, stats = run_lib.sample(run, params, 3, SampleRequest(num_steps=1, labels=np.arange(3)))
  assert images.shape == (3, 8, 8, 1) and stats["nfe"] >= 1
  assert float(jnp.min(images)) >= -1.0 and float(jnp.max(images)) <= 1.0
