"""WGAN-GP (Gulrajani et al. 2017) on a 2-D toy distribution (default ring8).

Usage: --config=configs/wgan_gp_toy.py:dataset=ring8,steps=3000
The paper's setting: lambda = 10, n_critic = 5, Adam(b1 = 0.5, b2 = 0.9) for both
players, no batch norm in the critic (LeakyReLU MLP). The paper uses lr 1e-4;
on these toy sets we default to lr 1e-3 so a short run covers ring8 (pass
lr=1e-4,critic_lr=1e-4 for the paper's value).
Arguments: dataset, n_critic, gp_lambda, lr, critic_lr, steps, batch, runlocal.
"""

from configs.common import parse_arg
from configs.gan_toy import build
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, dataset="ring8", n_critic=5, gp_lambda=10.0,
                lr=1e-3, critic_lr=1e-3, b1=0.5, b2=0.9, steps=3000, batch=256,
                plot_every=1000, runlocal=False)
  a.loss = "wgan_gp"
  return build(a)
