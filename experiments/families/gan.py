"""Generative adversarial networks as a two-phase trainer plug-in.

params = {"generator": G, "critic": D}. One train step is
  1. phase "critic": config.gan.n_critic updates of D on fresh (real batch, z)
     pairs with config.optim_critic; for loss "wgan" every update is followed by
     weight clipping to [-clip, clip] (the Phase's `project`);
  2. phase "generator": one update of G with config.optim.
Loss variants (config.gan.loss, research/losses/gan.py): "minimax" and
"non_saturating" (Goodfellow et al. 2014), "wgan" (Arjovsky et al. 2017) and
"wgan_gp" (Gulrajani et al. 2017, lambda = config.gan.gp_lambda).

Networks (config.model.kind):
  "mlp" (default): research/nets/gan_mlp.py's Generator / Critic on flattened
    examples (config.model.generator_hidden, critic_hidden, *_activation);
  "dcgan": research/nets/dcgan.py's DCGANGenerator / DCGANCritic (Radford et al.
    2016) on (H, W, C) images, width config.model.channels, normalisation
    config.model.generator_norm / critic_norm ("layer" | "none"; WGAN-GP critics
    use "none", Gulrajani et al. 2017, Sec. 4). The generator ends in tanh, so the
    data must be in the symmetric pixel range [-1, 1] (config.data.pixel_range).
    config.model.num_classes = K > 0 makes both players class-conditional (label
    embedding in G, projection critic, Miyato & Koyama 2018): the trainer then
    passes (x, y) batches, fakes in a critic or generator update are drawn for the
    real batch's labels y (so classes keep the data's frequencies), and `sample`
    takes SampleRequest.labels (default 0, 1, ..., K-1, 0, ...).

Samples are G(z), z ~ N(0, I_latent_dim): one network evaluation (nfe = 1). The
trainer evaluates the EMA of the parameters (config.ema_decay; only the
generator's EMA matters). On the Gaussian-mixture toy sets (ring8, grid25)
`evaluate` adds mode coverage (research/metrics/modes.py) and `figures` draws
the samples coloured by their nearest mode; on images the trainer's evaluation
adds Fréchet distance / precision / recall (experiments/evaluation.py) itself.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments import validation as check
from experiments.data import dataset_info
from experiments.families.protocol import Phase, SampleRequest, as_request, check_conditioning
from experiments.families.protocol import NO_PROMPT, labels_for, refuse_given
from research.data import toy
from research.losses import gan as gan_losses
from research.metrics import modes
from research.nets import dcgan
from research.nets.gan_mlp import ACTIVATIONS, Critic, Generator
from research.nets.mlp import functional

KINDS = ("mlp", "dcgan")
_ONE_PASS = "it samples in one generator pass"
REFUSED = {"sampler": "its only sampler is the generator, config.sample.sampler='generator'",
           "num_steps": _ONE_PASS, "options": _ONE_PASS + ", which takes no options",
           "guidance_scale": "it has no classifier-free guidance",
           "clip_x0": "it has no x0 prediction to clip", **NO_PROMPT}


def _check_dcgan(config) -> None:
  """config.model for kind "dcgan": images in [-1, 1], a valid width / norm / class count."""
  m = config.model
  info = dataset_info(config.data)
  if len(info.shape) != 3:
    raise ValueError(f"config.model.kind='dcgan' needs (H, W, C) images, but config.data.name="
                     f"{config.data.name!r} gives examples of shape {info.shape}")
  try:
    dcgan.seed_shape(info.shape)
  except ValueError as e:
    raise ValueError(f"config.data.name={config.data.name!r}: {e}") from None
  if info.pixel_range != "symmetric":
    raise ValueError(f"config.data.pixel_range must be 'symmetric' for config.model.kind='dcgan' "
                     f"(the generator ends in tanh, images in [-1, 1]), got {info.pixel_range!r}")
  check.positive_int(m.get("channels"), "config.model.channels")
  if "critic_channels" in m:
    check.positive_int(m.critic_channels, "config.model.critic_channels")
  for field, default in (("generator_norm", "layer"), ("critic_norm", "none")):
    check.choice(m.get(field, default), dcgan.NORMS, f"config.model.{field}")
  num_classes = check.non_negative_int(m.get("num_classes", 0), "config.model.num_classes")
  if num_classes and num_classes != info.num_classes:
    raise ValueError(f"config.model.num_classes={num_classes} must equal the {info.num_classes} "
                     f"classes of config.data.name={config.data.name!r} (0: unconditional)")


class GAN:
  """GAN family: init / phases / sample / evaluate / figures over a plain parameter pytree."""
  name = "gan"

  @staticmethod
  def check_config(config) -> None:
    g = check.require(config, "gan")
    kind = check.choice(g.get("loss"), gan_losses.LOSSES, "config.gan.loss")
    check.positive_int(g.get("n_critic"), "config.gan.n_critic")
    check.positive_int(g.get("latent_dim"), "config.gan.latent_dim")
    if kind == "wgan_gp":
      check.positive_number(g.get("gp_lambda", 0), "config.gan.gp_lambda")
    if kind == "wgan":
      check.positive_number(g.get("clip", 0), "config.gan.clip")
    if "optim_critic" not in config:
      raise ValueError("config.optim_critic is missing (the critic's optimizer section)")
    network = check.choice(config.model.get("kind", "mlp"), KINDS, "config.model.kind")
    if network == "mlp":
      for field in ("generator_hidden", "critic_hidden"):
        check.positive_ints(config.model[field], f"config.model.{field}")
      for field in ("generator_activation", "critic_activation"):
        check.choice(config.model.get(field), tuple(ACTIVATIONS), f"config.model.{field}")
      if config.model.get("num_classes", 0):
        raise ValueError(f"config.model.num_classes={config.model.num_classes} needs "
                         f"config.model.kind='dcgan' (the MLP GAN is unconditional)")
    else:
      _check_dcgan(config)
    check.choice(config.sample.sampler, ("generator",), "config.sample.sampler")

  def __init__(self, config, dataset):
    self.config = config
    self.dataset = dataset
    self.kind = config.gan.loss
    self.network = config.model.get("kind", "mlp")
    self.latent_dim = config.gan.latent_dim
    self.data_shape = tuple(dataset.shape)
    self.num_classes = int(config.model.get("num_classes", 0)) if self.network == "dcgan" else 0
    self.conditional = self.num_classes > 0
    # Abstract modules (no initializer runs): only their graph definitions are kept.
    g_module, c_module = nnx.eval_shape(lambda: self._modules(jax.random.key(0)))
    _, self._generator = functional(g_module)
    _, self._critic = functional(c_module)

  def _modules(self, key):
    m = self.config.model
    k_g, k_c = jax.random.split(key)
    if self.network == "dcgan":
      generator = dcgan.DCGANGenerator(self.latent_dim, self.data_shape, channels=m.channels,
                                       norm=m.get("generator_norm", "layer"),
                                       num_classes=self.num_classes, rngs=nnx.Rngs(params=k_g))
      critic = dcgan.DCGANCritic(self.data_shape, channels=m.get("critic_channels", m.channels),
                                 norm=m.get("critic_norm", "none"), num_classes=self.num_classes,
                                 rngs=nnx.Rngs(params=k_c))
      return generator, critic
    generator = Generator(self.latent_dim, self.data_shape, tuple(m.generator_hidden),
                          activation=m.generator_activation, rngs=nnx.Rngs(params=k_g))
    critic = Critic(self.data_shape, tuple(m.critic_hidden), activation=m.critic_activation,
                    rngs=nnx.Rngs(params=k_c))
    return generator, critic

  def init(self, key: jax.Array):
    generator, critic = self._modules(key)
    return {"generator": functional(generator)[0], "critic": functional(critic)[0]}

  def generate(self, generator_params, key, n: int, labels=None) -> jax.Array:
    """G(z), z ~ N(0, I) of shape (n, latent_dim); `labels` (n,) for a conditional generator."""
    z = jax.random.normal(key, (n, self.latent_dim), jnp.float32)
    if labels is None:
      return self._generator(generator_params, z)
    return self._generator(generator_params, z, labels)

  def critic_fn(self, critic_params, labels=None):
    """x -> f(x) (or f(x, labels) for a conditional critic), shape (B,)."""
    if labels is None:
      return lambda x: self._critic(critic_params, x)
    return lambda x: self._critic(critic_params, x, labels)

  def _split(self, batch):
    """(x, labels): labels is None for an unconditional family."""
    return batch if self.conditional else (batch, None)

  def critic_loss(self, params, batch, key, step):
    """D / critic loss on a real batch and as many fresh fakes (+ lambda GP for wgan_gp).

    Conditional: the fakes are drawn for the real batch's labels and the critic (and its
    gradient penalty) sees those labels with both real and fake images.
    """
    del step
    batch, labels = self._split(batch)
    k_z, k_gp = jax.random.split(key)
    fake = jax.lax.stop_gradient(self.generate(params["generator"], k_z, batch.shape[0], labels))
    f = self.critic_fn(params["critic"], labels)
    real_out, fake_out = f(batch), f(fake)
    loss = gan_losses.critic_loss(self.kind, real_out, fake_out)
    metrics = {"real_out": jnp.mean(real_out), "fake_out": jnp.mean(fake_out)}
    if self.kind in ("wgan", "wgan_gp"):
      metrics["w1_estimate"] = jnp.mean(real_out) - jnp.mean(fake_out)
    if self.kind == "wgan_gp":
      gp = gan_losses.gradient_penalty(k_gp, f, batch, fake)
      metrics["gradient_penalty"] = gp
      loss = loss + self.config.gan.gp_lambda * gp
    else:
      metrics["real_prob"] = jnp.mean(jax.nn.sigmoid(real_out))
      metrics["fake_prob"] = jnp.mean(jax.nn.sigmoid(fake_out))
    return loss, metrics

  def generator_loss(self, params, batch, key, step):
    """G loss on batch.shape[0] fresh fakes (the real batch only sets the size and labels)."""
    del step
    batch, labels = self._split(batch)
    fake = self.generate(params["generator"], key, batch.shape[0], labels)
    fake_out = self.critic_fn(params["critic"], labels)(fake)
    return gan_losses.generator_loss(self.kind, fake_out), {"fake_out": jnp.mean(fake_out)}

  def phases(self):
    project = None
    if self.kind == "wgan":
      clip = self.config.gan.clip
      project = lambda critic: gan_losses.clip_weights(critic, clip)  # noqa: E731
    return [
        Phase("critic", self.critic_loss, group="critic", optim="optim_critic",
                      repeats=self.config.gan.n_critic, project=project),
        Phase("generator", self.generator_loss, group="generator", optim="optim"),
    ]

  def loss(self, params, batch, key, step):
    """The generator's loss (the trainer trains the two players through phases())."""
    return self.generator_loss(params, batch, key, step)

  def check_request(self, request: SampleRequest | None, n: int | None = None) -> None:
    """Only labels (conditional GANs) can be asked for: everything else is refused."""
    request = as_request(request)
    refuse_given(self.name, request, REFUSED)
    check_conditioning(self.name, request, self.num_classes, n)

  def sample(self, params, key, n: int, request: SampleRequest | None = None):
    """x = G(z[, labels]), z ~ N(0, I); returns (x, {"nfe": 1}).

    Conditional models: request.labels (n,) ints in [0, num_classes), default
    0, 1, ..., K-1, 0, ...; any other request field is refused.
    """
    request = as_request(request)
    self.check_request(request, n)
    labels = labels_for(request, n, self.num_classes)
    return self.generate(params["generator"], key, n, labels), {"nfe": 1}

  def _coverage(self, params, key, dataset, n):
    mixture = toy.mixture(dataset.name)
    x, _ = self.sample(params, key, n)
    cov = modes.mode_coverage(x, mixture.means, mixture.stds,
                              num_std=self.config.gan.get("hq_num_std", 3.0),
                              min_fraction=self.config.gan.get("mode_min_fraction", 0.2))
    return x, mixture, cov

  def evaluate(self, params, key, dataset) -> dict:
    """Mode coverage of config.eval.num_samples samples on ring8 / grid25 ({} elsewhere)."""
    if getattr(dataset, "name", None) not in toy.MIXTURE_NAMES:
      return {}
    _, _, cov = self._coverage(params, key, dataset, self.config.eval.num_samples)
    cov = jax.device_get(cov)
    return {k: (np.asarray(v).tolist() if np.ndim(v) else
                (int(v) if np.issubdtype(np.asarray(v).dtype, np.integer) else float(v)))
            for k, v in cov.items()}

  def figures(self, params, key, workdir: str, step: int) -> list:
    """WORKDIR/modes_<step>.png: samples coloured by nearest mode, HQ discs drawn (mixtures only)."""
    if self.dataset.name not in toy.MIXTURE_NAMES:
      return []
    from experiments import run_figures
    x, mixture, cov = self._coverage(params, key, self.dataset, self.config.eval.plot_samples)
    title = (f"{self.kind} on {self.dataset.name}, step {step}: {int(cov['modes_hit'])}/"
             f"{len(mixture.means)} modes, HQ {float(cov['hq_fraction']):.2f}")
    return [run_figures.mode_coverage(
        f"{workdir}/modes_{step:07d}.png", np.asarray(x), np.asarray(mixture.means),
        np.asarray(mixture.stds), np.asarray(cov["hq_counts"]), float(cov["min_hq_count"]),
        num_std=self.config.gan.get("hq_num_std", 3.0), title=title)]
