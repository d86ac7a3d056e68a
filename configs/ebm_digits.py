"""An energy-based model on scikit-learn's 8x8 digits (grey levels, pixels in [0, 1]):
contrastive divergence with short-run Langevin chains and a replay buffer (Du & Mordatch
2019; docs/ebm.md). The energy is an MLP on the 64 pixels.

Usage: --config=configs/ebm_digits.py:steps=3000
Arguments: alpha (energy regulariser), chain_steps (Langevin steps per training chain),
step_size, noise (Langevin noise std; Du & Mordatch's decoupled noise, much smaller than
sqrt(step_size)), grad_clip (elementwise input-gradient clip, 0 = none), reinit, buffer,
sample_steps (steps of the evaluation chain from noise), hidden (MLP width, 3 layers), lr,
steps, batch, runlocal (a few steps of a tiny model, for tests).
"""

from configs.common import base_config, parse_arg, runlocal
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, alpha=1.0, chain_steps=40, step_size=2.0, noise=0.01, grad_clip=0.0,
                reinit=0.05, buffer=10000, sample_steps=200, hidden=256, lr=1e-4, steps=3000,
                batch=128, runlocal=False)
  c = base_config("ebm", "digits")
  c.model = ml_collections.ConfigDict({"hidden": (a.hidden,) * 3, "activation": "silu"})
  c.ebm = ml_collections.ConfigDict({
      "alpha": a.alpha,
      "buffer_size": a.buffer,
      "reinit_prob": a.reinit,
      "data_range": (0.0, 1.0),     # the unit pixel range: noise box and clamp box
      "sampler": "langevin",
      "num_steps": a.chain_steps,
      "step_size": a.step_size,
      "noise_scale": a.noise,
      "grad_clip": a.grad_clip,
      "clamp": True,
  })
  c.sample = ml_collections.ConfigDict({"sampler": "langevin", "num_steps": a.sample_steps,
                                        "options": ""})
  c.train.update(num_steps=a.steps, batch_size=a.batch, checkpoint_every=1000, log_every=100)
  c.optim.update(lr=a.lr, b1=0.0, b2=0.999, grad_clip=0.0)
  c.ema_decay = 0.0
  c.eval.update(num_samples=297, plot_samples=100)
  if a.runlocal:
    runlocal(c, num_steps=6, checkpoint_every=3, log_every=2, batch_size=32, num_samples=64,
             plot_samples=64, model={"hidden": (32, 32)},
             ebm={"buffer_size": 64, "num_steps": 3}, sample={"num_steps": 5})
  return c
