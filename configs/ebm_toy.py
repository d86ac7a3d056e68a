"""An energy-based model on a 2-D toy distribution: contrastive divergence with short-run
Langevin chains and a replay buffer (Du & Mordatch 2019; docs/ebm.md).

Usage: --config=configs/ebm_toy.py:dataset=ring8,steps=3000,alpha=0.1
Arguments: dataset (research.data.toy names), alpha (energy regulariser), chain_steps
(Langevin steps per training chain), step_size, noise (Langevin noise std; < 0: sqrt(step_size),
the unadjusted Langevin sampler of exp(-E)), reinit (probability a chain restarts from
noise instead of the buffer), buffer (replay-buffer entries), sampler (langevin | mala:
the training chain), sample_steps (steps of the evaluation chain from noise), hidden
(energy MLP width, 3 layers), lr, steps, batch, runlocal (a few steps of a tiny model, for tests).
"""

import math

from configs.common import base_config, parse_arg, runlocal
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, dataset="moons", alpha=0.1, chain_steps=60, step_size=0.01, noise=-1.0,
                reinit=0.05, buffer=10000, sampler="langevin", sample_steps=2000, hidden=128,
                lr=1e-3, steps=3000, batch=256, runlocal=False)
  c = base_config("ebm", a.dataset)
  c.model = ml_collections.ConfigDict({"hidden": (a.hidden,) * 3, "activation": "silu"})
  c.ebm = ml_collections.ConfigDict({
      "alpha": a.alpha,             # Du & Mordatch's alpha (E(x+)^2 + E(x-)^2)
      "buffer_size": a.buffer,
      "reinit_prob": a.reinit,      # a chain starts from U(data_range) with this probability
      "data_range": (-4.0, 4.0),    # noise box, clamp box and the density grid (covers the toys)
      "sampler": a.sampler,         # the training chain: langevin | mala
      "num_steps": a.chain_steps,
      "step_size": a.step_size,
      "noise_scale": a.noise if a.noise >= 0 else math.sqrt(a.step_size),
      "grad_clip": 0.0,             # 0: no gradient clipping
      "clamp": True,                # project the chains onto data_range after every step
  })
  c.sample = ml_collections.ConfigDict({"sampler": "langevin", "num_steps": a.sample_steps,
                                        "options": ""})
  c.train.update(num_steps=a.steps, batch_size=a.batch, checkpoint_every=1000, log_every=100)
  c.optim.update(lr=a.lr, b1=0.0, b2=0.999, grad_clip=0.0)   # Du & Mordatch: Adam, beta1 = 0
  c.ema_decay = 0.0              # required: the buffer is a parameter group (docs/ebm.md)
  c.eval.update(num_samples=2000, plot_samples=2000)
  if a.runlocal:
    runlocal(c, num_steps=10, checkpoint_every=5, log_every=5, batch_size=64, num_samples=256,
             plot_samples=256, model={"hidden": (32, 32)},
             ebm={"buffer_size": 256, "num_steps": 5},
             sample={"num_steps": 10})
  return c
