"""Flow matching at paper scale: I-CFM / OT-CFM (Tong et al. 2023, "Improving and
generalizing flow-based generative models with minibatch optimal transport") on CIFAR-10
(or mnist / fashion_mnist / celeb_a).

Usage: --config=configs/cfm_cifar10.py:coupling=ot,dataset=cifar10[,runlocal=true]

Tong et al.'s CIFAR-10 setting: U-Net 128 ch x (1, 2, 2, 2), 2 res blocks, attention at
16x16 with 4 heads, dropout 0.1; sigma = 0; Adam 2e-4, batch 128, 400k steps, 5000 warmup
steps, grad clip 1, EMA 0.9999; sampled with adaptive dopri5 (their FID table) or a fixed
Euler grid. coupling=ot re-pairs noise and data by exact minibatch OT (unconditional
only); cond=true trains class-conditionally with label dropout (independent coupling).
runlocal=true: a tiny U-Net for two steps (the tests run it on mocked data, 8 fake devices).
"""

from configs import images
from configs.common import parse_arg
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, coupling="ot", dataset="cifar10", cond=False, runlocal=False)
  c = images.paper_config("flow_matching", a.dataset)
  c.model = images.paper_unet(a.dataset, num_heads=4, dropout=0.1,
                              num_classes=10 if a.cond else 0)
  c.flow = ml_collections.ConfigDict({"path": "icfm", "coupling": a.coupling, "sigma": 0.0,
                                      "sigma_min": 1e-4})
  c.sample = ml_collections.ConfigDict({"sampler": "dopri5", "num_steps": 100,
                                        "guidance_scale": 1.0, "options": ""})
  c.train.update(num_steps=400_000, batch_size=128)
  # linear warmup, then constant
  c.optim.update(lr=2e-4, schedule="constant", warmup_steps=5000, grad_clip=1.0)
  c.ema_decay = 0.9999
  if a.runlocal:
    images.shrink_for_runlocal(c)
    c.sample.sampler = "euler"
  return c
