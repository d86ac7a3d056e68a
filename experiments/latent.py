"""Latent data sets: an image set seen through a trained autoencoder (latent diffusion).

Rombach et al. 2022 (LDM): a diffusion / flow-matching / consistency model trains on the
latents z = s mu(x) of a frozen autoencoder (experiments/families/autoencoder.py) and its
samples are decoded back to images. Any image data config opts in with one field:

    config.data.autoencoder_workdir = "workdirs/autoencoder_digits"

experiments.data.dataset_info then reports the latent shape (read from the autoencoder's
config.json, nothing compiled) and experiments.data.make_dataset returns a LatentDataset:

  shape                          the latent shape, e.g. (4, 4, 1)
  sample / sample_labeled        training latents drawn uniformly with replacement (as
  heldout / heldout_labeled      ArrayDataset: same indices, same labels, same keys)
  train, test, *_labels          the encoded splits (numpy), labels of the pixel set
  num_classes, name              those of the pixel set
  scale                          the autoencoder checkpoint's latent scale factor s
  encode(x) -> z                 z = s mu(x) (the encoder mean, not a posterior sample:
                                 deterministic, and the posterior std is small at a small
                                 KL weight), x in the pixel set's range
  decode(z) -> x                 D(z / s) in the pixel set's range (clipped to it)
  pixels                         the underlying pixel ArrayDataset (built from the same
                                 config.data without the field)
  autoencoder_workdir, autoencoder_step

Decoding happens in one place: experiments.run.sample decodes whatever the family drew
(run.dataset.decode), so launch.sample writes images, plots show images and the
evaluation scores the decoded samples against `pixels`' held-out split
(experiments.evaluation: pixel_dataset). The families never see pixels.

The autoencoder must be a finished run (its latest checkpoint at its config's
train.num_steps), so every launch of a latent run encodes with the same weights. The
train and test splits are encoded once per (workdir, step, pixel data) and cached in
memory for the process. Refusals (ValueError naming config.data.autoencoder_workdir,
raised by dataset_info before anything compiles): no such directory, no config.json, a
run of another family, another data set or resolution (config.data.name), no checkpoint,
an unfinished run; and config.data.dequantize with latents.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from experiments.data import ArrayDataset
from experiments.pixels import from_unit, to_unit

FIELD = "config.data.autoencoder_workdir"
_CACHE: dict = {}


def _checkpoint_steps(workdir: str) -> list[int]:
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory)
                if d.isdigit() and os.path.isdir(os.path.join(directory, d)))


def check_autoencoder_workdir(data_config) -> dict:
  """The autoencoder run's config.json (a dict) after every check; nothing is compiled.

  ValueError naming config.data.autoencoder_workdir when the workdir is missing, holds no
  config.json, holds a run of another family, was trained on another data set than
  config.data.name, has no checkpoint, or has not finished.
  """
  workdir = data_config.get("autoencoder_workdir", "")
  where = f"{FIELD}={workdir!r}"
  if not isinstance(workdir, str) or not workdir:
    raise ValueError(f"{FIELD} must name a trained autoencoder workdir, got {workdir!r}")
  if data_config.get("dequantize", 0):
    raise ValueError(f"config.data.dequantize={data_config.dequantize} cannot be combined with "
                     f"{where} (latents are not grey levels)")
  if not os.path.isdir(workdir):
    raise ValueError(f"{where}: no such directory (train one first: python -m launch.train "
                     f"--config=configs/autoencoder_digits.py --workdir={workdir})")
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise ValueError(f"{where} holds no config.json: it is not a training workdir")
  try:
    with open(path) as f:
      ae = json.load(f)
  except ValueError as e:
    raise ValueError(f"{where}: {path} is not valid JSON ({e})") from None
  if ae.get("family") != "autoencoder":
    raise ValueError(f"{where} holds a {ae.get('family')!r} run, not an autoencoder "
                     f"(config.family = 'autoencoder', configs/autoencoder_digits.py)")
  ae_data = ae.get("data", {})
  if ae_data.get("name") != data_config.get("name"):
    raise ValueError(f"{where} was trained on {ae_data.get('name')!r}, but config.data.name="
                     f"{data_config.get('name')!r}: the autoencoder must be trained on the same "
                     f"data set and resolution")
  if ae_data.get("autoencoder_workdir"):
    raise ValueError(f"{where} was itself trained on latents")
  steps = _checkpoint_steps(workdir)
  if not steps:
    raise ValueError(f"{where} has no checkpoint under {os.path.join(workdir, 'checkpoints')}: "
                     f"train the autoencoder first")
  num_steps = ae.get("train", {}).get("num_steps")
  if steps[-1] != num_steps:
    raise ValueError(f"{where}: the autoencoder run is not finished (latest checkpoint step "
                     f"{steps[-1]} of train.num_steps={num_steps}); finish it, so that every "
                     f"launch encodes with the same weights")
  return ae


def latent_shape(data_config) -> tuple[int, ...]:
  """The latent shape of the autoencoder named by data_config (config.json only)."""
  import ml_collections
  from experiments.families.autoencoder import latent_shape_of
  ae = ml_collections.ConfigDict(check_autoencoder_workdir(data_config))
  return tuple(latent_shape_of(ae))


@dataclasses.dataclass(frozen=True, eq=False)
class LatentDataset(ArrayDataset):
  """Scaled autoencoder latents of an image set, with the pixel set and a decoder (module doc).

  train / test are z = s mu(x) of the pixel splits; sampling and held-out draws are
  ArrayDataset's, so keys, indices and labels behave exactly as for pixels.
  """
  pixels: ArrayDataset | None = None
  scale: float = 1.0
  autoencoder_workdir: str = ""
  autoencoder_step: int = 0
  encoder: object = None          # jitted x (autoencoder pixel space) -> mu
  decoder: object = None          # jitted z (unscaled) -> x (autoencoder pixel space)
  autoencoder_pixel_range: str = "symmetric"
  modality: str = "latents"

  def encode(self, x) -> jax.Array:
    """z = s mu(x) for images x in the pixel set's range."""
    x = from_unit(to_unit(jnp.asarray(x), self.pixel_range), self.autoencoder_pixel_range)
    return self.scale * self.encoder(x)

  def decode(self, z) -> jax.Array:
    """Images D(z / s) in the pixel set's range (clipped to it), shape (n, *pixels.shape)."""
    x = self.decoder(jnp.asarray(z, jnp.float32) / self.scale)
    return from_unit(to_unit(x, self.autoencoder_pixel_range), self.pixel_range)

  def to_unit(self, x):
    raise TypeError("latents have no pixel range: decode them first (LatentDataset.decode), "
                    "or use LatentDataset.pixels")


def make_latent_dataset(data_config) -> LatentDataset:
  """The LatentDataset of data_config (checks, then restores and encodes once per process)."""
  from experiments import data as data_lib
  from experiments import sampling
  from experiments import run as run_lib
  import ml_collections

  ae = check_autoencoder_workdir(data_config)
  workdir = data_config.autoencoder_workdir
  pixel_config = data_lib._without_autoencoder(data_config)  # noqa: SLF001
  step = _checkpoint_steps(workdir)[-1]
  stamp = os.stat(os.path.join(workdir, "checkpoints", str(step))).st_mtime_ns
  key = (os.path.realpath(workdir), step, stamp, json.dumps(pixel_config.to_dict(), sort_keys=True))
  if key in _CACHE:
    return _CACHE[key]
  pixels = data_lib.make_dataset(pixel_config)
  run = run_lib.build(ml_collections.ConfigDict(ae))
  state = sampling.restore_readonly(workdir, run, step)
  params = state["ema_params"]   # = the trained params: the autoencoder has ema_decay 0
  family = run.family
  encoder = jax.jit(lambda x: family.encode(params, x))
  decoder = jax.jit(lambda z: family.decode(params, z))
  scale = float(jax.device_get(family.scale(params)))
  ae_range = ae.get("data", {}).get("pixel_range", "unit")

  def encode_split(images):
    x = from_unit(to_unit(jnp.asarray(images), pixels.pixel_range), ae_range)
    chunks = [encoder(x[i:i + 1024]) for i in range(0, x.shape[0], 1024)]
    return np.asarray(scale * jnp.concatenate(chunks), np.float32)

  out = LatentDataset(
      name=pixels.name, train=encode_split(pixels.train), test=encode_split(pixels.test),
      train_labels=pixels.train_labels, test_labels=pixels.test_labels,
      pixel_range=pixels.pixel_range, num_classes=pixels.num_classes, pixels=pixels,
      scale=scale, autoencoder_workdir=workdir, autoencoder_step=step, encoder=encoder,
      decoder=decoder, autoencoder_pixel_range=ae_range)
  _CACHE[key] = out
  return out
