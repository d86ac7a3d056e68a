"""KL-regularised convolutional autoencoder (LDM's first stage) as a trainer plug-in.

Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models":
encoder -> diagonal Gaussian posterior over a latent image z (H / f, W / f, c),
decoder, loss = reconstruction + config.autoencoder.kl_weight * KL
(research/losses/autoencoder.py; networks research/nets/conv_autoencoder.py). The
trained autoencoder is what `config.data.autoencoder_workdir` of a diffusion, flow
matching or consistency config points at (experiments/latent.py, docs/latent.md).

Parameters: {"model": {"encoder", "decoder"}, "latent": {"scale"}}. Only "model" is
trained (one phase on that group). "latent"/"scale" is the latent scale factor
s = 1 / std(mu(x)) over the elements of the encoder means of a fixed set of training
images (the first config.autoencoder.scale_images of the train split; 0 = all), the
analogue of Stable Diffusion's 0.18215. It is set by init and refreshed by after_step
after every update, so it is part of the checkpointed state and a restored step carries
the scale of its own encoder (why not compute it when the latents are made: a
checkpoint is then self-describing, and every reader of it -- the latent datasets,
the tests, a later LDM run -- gets the same number without re-deriving it; why every
step rather than at checkpoint time: after_step cannot see when the trainer will save,
and a preemption saves at any step; the encoder pass over the fixed images costs a
fraction of the train step's forward-backward).

Why config.ema_decay must be 0: the trainer's evaluation EMA averages every parameter
group, so with decay > 0 the stored EMA scale would be an average of past scales,
not 1 / std of the EMA encoder's latents. LDM's autoencoder has no EMA either; with
decay 0 the EMA params are the trained params exactly.

Sampling: the autoencoder is not a generative model (its aggregate posterior is not
N(0, I) at a small KL weight). Its one "sampler", "reconstruction", returns the
decoded encoder means of n held-out images (the first n of a key-dependent
permutation), so the run's evaluation scores reconstructions: Fréchet distance /
precision / recall of reconstructions of the held-out split against that split, and
`evaluate` adds the held-out MSE (pixels in [0, 1]), PSNR, KL and the latent scale.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments import validation as check
from experiments.data import DIGITS_NAMES, dataset_info
from experiments.families.protocol import (NO_PROMPT, Phase, SampleRequest, as_request, refuse,
                                           refuse_given)
from research.losses import autoencoder as ae_loss
from research.nets import conv_autoencoder
from research.nets.mlp import functional

SAMPLERS = ("reconstruction",)
_WHY = "it reconstructs held-out images in one encoder-decoder pass"
REFUSED = {"num_steps": _WHY, "options": _WHY + ", which takes no options",
           "labels": "the autoencoder is unconditional",
           "guidance_scale": "the autoencoder is unconditional",
           "clip_x0": "it has no x0 prediction to clip", **NO_PROMPT}


def latent_shape_of(config) -> tuple[int, int, int]:
  """The latent shape (H / f, W / f, c) of an autoencoder config, from config.json fields only."""
  a = config.autoencoder
  image_shape = dataset_info(config.data).shape
  return conv_autoencoder.latent_shape(image_shape, int(a.latent_channels), tuple(a.channels))


class AutoEncoder:
  """Autoencoder family: init / phases / loss / after_step / sample / evaluate."""
  name = "autoencoder"
  num_classes = 0
  conditional = False

  @staticmethod
  def check_config(config) -> None:
    a = config.autoencoder
    if config.data.get("autoencoder_workdir", ""):
      raise ValueError(f"config.data.autoencoder_workdir={config.data.autoencoder_workdir!r}: "
                       f"the autoencoder family trains on pixels, not on another "
                       f"autoencoder's latents; set it to ''")
    info = dataset_info(config.data)
    if len(info.shape) != 3 or config.data.name not in DIGITS_NAMES:
      raise ValueError(f"config.data.name={config.data.name!r}: the autoencoder family needs an "
                       f"in-memory image set {DIGITS_NAMES} (its latent scale is computed from "
                       f"a fixed set of training images)")
    check.positive_int(a.latent_channels, "config.autoencoder.latent_channels")
    channels = check.positive_ints(a.channels, "config.autoencoder.channels")
    try:
      conv_autoencoder.latent_shape(info.shape, a.latent_channels, channels)
    except ValueError as e:
      raise ValueError(f"config.autoencoder.channels={tuple(channels)}: {e}") from None
    check.non_negative_number(a.kl_weight, "config.autoencoder.kl_weight")
    check.choice(a.reconstruction, ae_loss.RECONSTRUCTIONS, "config.autoencoder.reconstruction")
    check.non_negative_int(a.get("scale_images", 0), "config.autoencoder.scale_images")
    if config.ema_decay != 0:
      raise ValueError(f"config.ema_decay must be 0 for the autoencoder family, got "
                       f"{config.ema_decay!r}: the latent scale is a parameter group refreshed "
                       f"from the trained encoder, and an EMA would average past scales")
    check.choice(config.sample.sampler, SAMPLERS, "config.sample.sampler")

  def __init__(self, config, dataset):
    self.config = config
    self.a = config.autoencoder
    self.dataset = dataset
    self.data_shape = tuple(dataset.shape)
    self.latent_shape = conv_autoencoder.latent_shape(self.data_shape, int(self.a.latent_channels),
                                                      tuple(self.a.channels))
    m = int(self.a.get("scale_images", 0)) or dataset.train.shape[0]
    self.scale_images = np.asarray(dataset.train[:m], np.float32)   # the fixed set (first m)
    encoder, decoder = nnx.eval_shape(lambda: self._modules(jax.random.key(0)))
    _, self._encode = functional(encoder)
    _, self._decode = functional(decoder)
    self._reconstruct = jax.jit(lambda p, x: self.decode(p, self.encode(p, x)))

  def _modules(self, key):
    k_enc, k_dec = jax.random.split(key)
    channels = tuple(self.a.channels)
    encoder = conv_autoencoder.Encoder(self.data_shape, int(self.a.latent_channels), channels,
                                       rngs=nnx.Rngs(params=k_enc))
    decoder = conv_autoencoder.Decoder(int(self.a.latent_channels), self.data_shape,
                                       tuple(reversed(channels)), rngs=nnx.Rngs(params=k_dec))
    return encoder, decoder

  # -- the pieces the latent datasets use (experiments/latent.py) ----------------------
  def encode(self, params, x):
    """Encoder means mu(x) (unscaled), (..., *latent_shape); x in the autoencoder's pixel space."""
    return self._encode(params["model"]["encoder"], x)[0]

  def decode(self, params, z):
    """Decoder output D(z) for unscaled latents z, in the autoencoder's pixel space."""
    return self._decode(params["model"]["decoder"], z)

  def scale(self, params):
    """The stored latent scale factor s (a float32 scalar)."""
    return params["latent"]["scale"]

  def _scale_of(self, model):
    mu = self._encode(model["encoder"], jnp.asarray(self.scale_images))[0]
    return ae_loss.latent_scale_factor(jax.lax.stop_gradient(mu))

  # -- training ------------------------------------------------------------------------
  def init(self, key: jax.Array):
    encoder, decoder = self._modules(key)
    model = {"encoder": functional(encoder)[0], "decoder": functional(decoder)[0]}
    return {"model": model, "latent": {"scale": self._scale_of(model)}}

  def phases(self):
    """One phase training the "model" group; "latent" is refreshed by after_step only."""
    return [Phase("model", self.loss, group="model")]

  def loss(self, params, batch, key, step):
    """Reconstruction + kl_weight KL of one posterior sample per image (research/losses)."""
    del step
    model = params["model"]
    mu, log_var = self._encode(model["encoder"], batch)
    return ae_loss.kl_autoencoder_loss(
        key, batch, mu, log_var, lambda z: self._decode(model["decoder"], z),
        kl_weight=float(self.a.kl_weight), reconstruction=self.a.reconstruction,
        event_ndim=len(self.data_shape))

  def after_step(self, params, step):
    """Refresh the latent scale from the just-updated encoder (module docstring)."""
    del step
    return {**params, "latent": {"scale": self._scale_of(params["model"])}}

  # -- sampling: reconstructions of held-out images ------------------------------------
  def check_request(self, request: SampleRequest | None, n: int | None = None) -> None:
    request = as_request(request)
    if request.sampler is not None and request.sampler not in SAMPLERS:
      refuse(self.name, "sampler", request.sampler, f"its samplers are {SAMPLERS}")
    refuse_given(self.name, request, REFUSED)
    available = int(self.dataset.test.shape[0])
    if n is not None and n > available:
      raise ValueError(f"the autoencoder family reconstructs held-out images: n={n} exceeds "
                       f"the {available} held-out images of {self.config.data.name!r}")

  def sample(self, params, key, n: int, request: SampleRequest | None = None):
    """Reconstructions D(mu(x)) of n held-out images x; returns (x_hat, {})."""
    request = as_request(request)
    self.check_request(request, n)
    x = self.dataset.heldout(key, n)
    return self._reconstruct(params, x), {}

  def evaluate(self, params, key, dataset) -> dict:
    """Held-out MSE / PSNR (pixels in [0, 1]) of decoded means, KL, and the latent scale."""
    del key

    @jax.jit
    def terms(params, x):
      mu, log_var = self._encode(params["model"]["encoder"], x)
      x_hat = self.decode(params, mu)
      err = jnp.square(dataset.to_unit(x_hat) - dataset.to_unit(x))
      per_image = jnp.mean(err, axis=tuple(range(1, x.ndim)))
      kl = ae_loss.kl_diagonal(mu, log_var, mu.ndim - 1)
      return per_image, kl, jnp.std(mu * self.scale(params))

    per_image, kl, scaled_std = jax.device_get(terms(params, jnp.asarray(dataset.test)))
    mse = float(np.mean(per_image))
    return {"test_recon_mse": mse,
            "test_recon_mse_stderr": float(np.std(per_image, ddof=1) / math.sqrt(per_image.size)),
            "test_psnr": float(10 * np.log10(1.0 / mse)) if mse > 0 else float("inf"),
            "test_kl": float(np.mean(kl)),
            "latent_scale": float(jax.device_get(self.scale(params))),
            "test_latent_std_scaled": float(scaled_std),
            "latent_shape": list(self.latent_shape)}
