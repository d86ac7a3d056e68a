"""Improved consistency training (iCT, Song & Dhariwal 2023) at paper scale on CIFAR-10
(or mnist / fashion_mnist / celeb_a).

Usage: --config=configs/consistency_cifar10.py:dataset=cifar10[,runlocal=true]

iCT's CIFAR-10 constants: sigma_min 0.002, sigma_max 80, rho 7, sigma_data 0.5,
s0 = 10, s1 = 1280 (doubling curriculum), log-normal index (P_mean -1.1, P_std 2),
pseudo-Huber c = 0.00054 sqrt(d), weights 1/(s_{n+1} - s_n), no EMA target
(theta- = stop_gradient(theta)), dropout 0.3, RAdam lr 1e-4 (Adam here), batch 1024,
400k steps, EMA 0.99993. The network is the project's U-Net at DDPM's CIFAR-10 size
(iCT uses NCSN++; not implemented). Sampled in 1 or 2 steps.
runlocal=true: a tiny U-Net for two steps (the tests run it on mocked data, 8 fake devices).
"""

from configs import images
from configs.common import parse_arg
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, dataset="cifar10", cond=False, sample_steps=1, runlocal=False)
  c = images.paper_config("consistency", a.dataset)
  c.model = images.paper_unet(a.dataset, num_heads=4, dropout=0.3,
                              num_classes=10 if a.cond else 0, time_scale=250.0)
  c.consistency = images.ict_consistency()
  c.sample = ml_collections.ConfigDict({"sampler": "consistency", "num_steps": a.sample_steps,
                                        "sigmas": (), "guidance_scale": 1.0})
  c.train.update(num_steps=400_000, batch_size=1024)
  c.optim.update(lr=1e-4, grad_clip=0.0)
  c.ema_decay = 0.99993
  if a.runlocal:
    images.shrink_for_runlocal(c)
  return c
