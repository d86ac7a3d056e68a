"""A GAN on a 2-D toy distribution (default: non-saturating GAN on ring8).

Usage: --config=configs/gan_toy.py:dataset=ring8,loss=non_saturating,steps=3000
Arguments: dataset (research.data.toy names; mode coverage is reported on ring8
and grid25), loss (minimax | non_saturating | wgan | wgan_gp), n_critic
(critic updates per generator update), lr, critic_lr, steps, batch, runlocal
(a few steps of a tiny model, for tests).

Optimizers: config.optim is the generator's, config.optim_critic the critic's
(Adam, b1 = 0.5 as in DCGAN / Unrolled GANs; no gradient clipping, no schedule).
For the WGAN-GP setting of Gulrajani et al. 2017 use configs/wgan_gp_toy.py.
"""

from configs.common import (base_config, gan_optimizers, parse_arg, product, runlocal, sweep_arg,
                            zip_)
import ml_collections


def build(a) -> ml_collections.ConfigDict:
  """The config from parsed arguments `a` (shared with configs/wgan_gp_toy.py)."""
  c = base_config("gan", a.dataset)
  c.gan = ml_collections.ConfigDict({
      "loss": a.loss,
      "n_critic": a.n_critic,
      "latent_dim": 2,            # 2-D Gaussian noise, as in Gulrajani et al.'s toy code
      "gp_lambda": a.gp_lambda,   # used by wgan_gp only
      "clip": 0.01,               # used by wgan only (Arjovsky et al. 2017)
      "hq_num_std": 3.0,          # mode coverage: HQ radius in stds ...
      "mode_min_fraction": 0.2,   # ... and a mode is hit with >= 0.2 n / K HQ samples
  })
  c.model = ml_collections.ConfigDict({
      "generator_hidden": (256, 256, 256), "generator_activation": "silu",
      "critic_hidden": (256, 256, 256), "critic_activation": "leaky_relu",
  })
  c.sample = ml_collections.ConfigDict({"sampler": "generator"})
  c.train.update(num_steps=a.steps, batch_size=a.batch, checkpoint_every=1000, log_every=200,
                 plot_every=a.plot_every)
  gan_optimizers(c, lr=a.lr, critic_lr=a.critic_lr, b1=a.b1, b2=a.b2)
  c.ema_decay = 0.99   # generator EMA used for evaluation; GAN iterates oscillate
  c.eval.num_samples = 2000
  if a.runlocal:
    runlocal(c, num_steps=10, checkpoint_every=5, log_every=5, num_samples=256, plot_samples=256,
             train={"plot_every": 0},
             model={"generator_hidden": (32, 32), "critic_hidden": (32, 32)})
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, dataset="ring8", loss="non_saturating", n_critic=1, gp_lambda=10.0,
                lr=1e-3, critic_lr=1e-3, b1=0.5, b2=0.999, steps=3000, batch=256,
                plot_every=1000, runlocal=False)
  return build(a)


def get_sweep(arg: str | None = None) -> list[dict]:
  """Mode coverage: (non-saturating GAN, n_critic 1) vs (WGAN-GP, n_critic 5) on ring8 and grid25.

  The loss and its critic schedule move together (a zip), crossed with the data set and
  3 seeds each (config.num_seeds). runlocal=true: both losses on ring8, 1 seed.
  """
  a = sweep_arg(arg, runlocal=False)
  losses = zip_(("gan.loss", ["non_saturating", "wgan_gp"]), ("gan.n_critic", [1, 5]))
  if a.runlocal:
    return losses
  return product(losses, ("data.name", ["ring8", "grid25"]), ("num_seeds", [3]))
